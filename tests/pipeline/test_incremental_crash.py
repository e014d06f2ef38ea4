"""Issue 15, "a day's run costs what changed": the incremental days of tests/pipeline/history.py in a time zone
that reaches the start date first, and a crash in the middle of an incremental build. Helpers and the fixture
are test_incremental.py's; this is a module of its own so that `make test`'s workers (--dist loadscope) run
it beside the long history test, not after it."""
from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from hrlms import pipeline

from ..e2e.test_people_scenario import person, scenario_mapping, write_day  # noqa: F401 (a fixture)
from .history import DAYS
from .test_incremental import change_set, history_env, lms_users_groups, marts, plan_ops, run_day, scope, side  # noqa: F401

pytestmark = pytest.mark.e2e


# --- 2. a start date reaching "today" in one time zone and not another -------------------------------

def test_start_reaching_today_in_tokyo_not_los_angeles(history_env, local_stack, tmp_path, monkeypatch):  # noqa: F811
    """No HR edit between two runs of the same logical date (the same landing files): at 15:00 UTC on
    the eve of the start date it is already the start date in Tokyo, not in Los Angeles."""
    landing = history_env
    start = date(2026, 4, 10)
    eve = start - timedelta(days=1)
    rows = [person("P01", "ORG1", None), person("P02", "ORG1", "P01"),
            person("P50", "ORG1", "P01", status="P", tz="Asia/Tokyo", hire=start),
            person("P51", "ORG1", "P01", status="P", tz="America/Los_Angeles", hire=start)]
    write_day(landing, eve, rows, [("ORG1", "Company", "", "P01")])
    rules = tmp_path / "rules.yaml"
    rules.write_text(DAYS[0].rules_text)
    monkeypatch.setenv("HRLMS_LEARNING_RULES", str(rules))
    with side("tz", local_stack.warehouse_url, tmp_path, "changed") as s:
        s.activate(monkeypatch)
        pipeline.run_all("tz-midnight", datetime(eve.year, eve.month, eve.day, 0, tzinfo=timezone.utc))
        users, _ = lms_users_groups(s)
        assert set(users) == {"P01", "P02"}

        # 15:00 UTC: Tokyo is Apr 10 00:00, Los Angeles Apr 9 08:00. Same files, a new run.
        key = "tz-afternoon"
        pipeline.run_all(key, datetime(eve.year, eve.month, eve.day, 15, tzinfo=timezone.utc))
        assert s.q("select count(distinct detail -> 'workers' ->> 'snapshot_id') from audit.stage_runs "
                   "where stage = 'ingest'") == [(1,)]              # both runs read the same snapshot
        ops = plan_ops(s, key)
        user_ops = [(p, t) for p, _g, t, *_ in ops if t in ("create_user", "update_user", "deactivate_user",
                                                             "reactivate_user", "set_manager")]
        assert user_ops == [("P50", "create_user")] or sorted(user_ops) == [("P50", "create_user"),
                                                                              ("P50", "set_manager")]
        member_ops = [(g, t, m) for _p, g, t, _f, _pl, m, _st in ops if g is not None]
        assert member_ops and all(t == "add_members" and m == ("P50",) for _g, t, m in member_ops), member_ops
        users, groups = lms_users_groups(s)
        assert set(users) == {"P01", "P02", "P50"} and users["P50"][0] is True and users["P50"][2] == "P01"
        assert "P50" in groups["org:ORG1"][1] and "P51" not in str(groups)

        # What the change set (issue 15) says about it.
        assert scope(s, key).get("mode") == "restricted", scope(s, key)
        got = change_set(s, key)
        assert got is not None, "no audit.change_set_people (the change sets of issue 15)"
        assert "dates" in got.get("P50", set()), got
        assert "P51" not in got, got


# --- 3. a crash in the middle of an incremental build, then the rerun --------------------------------

class DiesMidBuild:
    """Replace hrlms.transform.dbt.build by one that, the first time, builds part of the models (their
    incremental updates committed) and then dies; later calls build as the original."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, part: str):
        from hrlms.transform import dbt

        self.calls = 0
        original = dbt.build

        def dying(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == 1:
                original(*args, **{**kwargs, "select": part})
                raise RuntimeError("injected: dbt died mid-build")
            return original(*args, **kwargs)

        monkeypatch.setattr(dbt, "build", dying)


class Once:
    """Replace `module.name` by a function that raises the first time, then behaves as the original."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any, name: str, message: str):
        self.original = getattr(module, name)
        self.calls = 0

        def failing(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError(message)
            return self.original(*args, **kwargs)

        monkeypatch.setattr(module, name, failing)


def test_crash_mid_incremental_build_then_rerun(history_env, local_stack, tmp_path, monkeypatch):  # noqa: F811
    """Days 1, 2 and 5 of the history (day 5 after a gap: the dates of days 3 and 4 cross too). Day 2's
    transform dies in dbt after the incremental models up to int_workers_identity were updated, day 5's plan
    dies inside its transaction; each is rerun with the same run_key. The plans, the LMS, the marts and the
    incremental tables must be those of a clean run of the same days."""
    from hrlms.sync import breaker

    landing = history_env
    days = [DAYS[0], DAYS[1], DAYS[4]]
    with side("crash", local_stack.warehouse_url, tmp_path, "changed") as crash, \
            side("clean", local_stack.warehouse_url, tmp_path, "changed") as clean:
        for day in days:
            run_day(clean, day, landing, tmp_path, monkeypatch)

        run_day(crash, days[0], landing, tmp_path, monkeypatch)
        with monkeypatch.context() as m:
            dies = DiesMidBuild(m, "+int_workers_identity")
            with pytest.raises(Exception, match="injected: dbt died"):
                run_day(crash, days[1], landing, tmp_path, monkeypatch)
            assert dies.calls == 1
        assert crash.q("select count(*) from audit.stage_runs where run_key = 'crash-day02' "
                       "and stage in ('plan', 'apply')") == [(0,)]
        run_day(crash, days[1], landing, tmp_path, monkeypatch)     # the same run_key, dbt as it is

        with monkeypatch.context() as m:
            once = Once(m, breaker, "evaluate", "injected: the plan died in its transaction")
            with pytest.raises(Exception, match="injected: the plan died"):
                run_day(crash, days[2], landing, tmp_path, monkeypatch)
            assert once.calls == 1
        assert crash.q("select count(*) from sync.ops o join sync.plans p using (plan_id) "
                       "where p.logical_date = %s", days[2].day) == [(0,)]   # rolled back with the plan
        run_day(crash, days[2], landing, tmp_path, monkeypatch)

        for day in days:
            assert Counter(crash.plans[day.n]) == Counter(clean.plans[day.n]), f"day {day.n}: plans differ"
        assert lms_users_groups(crash) == lms_users_groups(clean)
        assert marts(crash) == marts(clean)
        assert crash.q("select count(*) from sync.ops where status not in ('applied', 'superseded')") == [(0,)]

        # The rerun's change set is the clean run's (nothing lost because the crashed attempt had one).
        for day in days[1:]:
            got, want = change_set(crash, f"crash-day{day.n:02d}"), change_set(clean, f"clean-day{day.n:02d}")
            assert got is not None, "no audit.change_set_people (the change sets of issue 15)"
            assert got == want, f"day {day.n}"
