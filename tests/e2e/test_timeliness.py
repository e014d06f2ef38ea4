"""Access on day one, everywhere (issue 16): the real DAG on its default schedule, hour by hour.

Hires whose first day is 2026-03-09 and leavers whose last day is 2026-03-08 (the day New York moves to
daylight-saving time) in six zones from UTC-10 to UTC+14, plus a Tokyo hire whose HR record arrives only
with the 2026-03-09 file. Every scheduled logical moment of the DAG's own timetable from 06:00 UTC on the
8th to 10:00 UTC on the 9th is run with dag.test() against a real warehouse and a real scim2-server.

What must hold (the user's outcome, checked in the LMS after every run): each hire is active from the
run that is the last able to write before 00:00 local on day one; each leaver is active through their
last local day and deactivated by the first run after it ends; runs with nothing due build nothing.
Then marts.access_events / access_latency_by_run must report exactly those runs and latencies.
"""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pendulum
import pytest

from hrlms.sync.scim import LmsConfig, ScimClient
from hrlms.transform.dbt import project_vars
from hrlms.warehouse import db

from .test_people_scenario import lms_state, person, scenario_mapping, write_day  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e

DAY_ONE = date(2026, 3, 9)
LAST_DAY = DAY_ONE - timedelta(days=1)      # Sunday 2026-03-08: New York springs forward (EST -> EDT)
ZONES = {"HON": "Pacific/Honolulu",         # UTC-10, no DST
         "NYC": "America/New_York",         # UTC-5 before the 8th, UTC-4 after
         "UTC": "Etc/UTC",                  # UTC+0
         "KOL": "Asia/Kolkata",             # UTC+5:30
         "TYO": "Asia/Tokyo",               # UTC+9
         "KIR": "Pacific/Kiritimati"}       # UTC+14
FIRST_RUN = datetime(2026, 3, 8, 6, tzinfo=timezone.utc)
LAST_RUN = datetime(2026, 3, 9, 10, tzinfo=timezone.utc)
ORGS = [("ORG1", "Company", "", "P01")]
HR_LATE = "P90"                             # Tokyo hire of the same day, first sent in the 2026-03-09 file


def people(with_late_hire: bool) -> list[dict]:
    rows = [person("P01", "ORG1", None, tz="Etc/UTC")]
    for i, zone in enumerate(ZONES.values()):
        rows.append(person(f"P1{i}", "ORG1", "P01", status="P", tz=zone, hire=DAY_ONE))          # hire
        rows.append(person(f"P2{i}", "ORG1", "P01", tz=zone, last=LAST_DAY, term=LAST_DAY))    # leaver
    if with_late_hire:
        rows.append(person(HR_LATE, "ORG1", "P01", status="P", tz="Asia/Tokyo", hire=DAY_ONE))
    return rows


def scheduled_moments(dag, earliest: datetime, latest: datetime) -> list[datetime]:
    """The DAG's own scheduled logical moments in [earliest, latest] (its timetable, not a copy of it)."""
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import TimeRestriction

    timetable = coerce_to_core_timetable(dag.timetable)
    restriction = TimeRestriction(earliest=pendulum.instance(earliest), latest=pendulum.instance(latest), catchup=True)
    moments, last = [], None
    while (info := timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)):
        moments.append(info.logical_date)
        last = info.data_interval
    return moments


def test_access_on_day_one_in_every_zone(provision_dag, fresh_db, fresh_lms, landing, scenario_mapping):  # noqa: F811
    lead = timedelta(hours=float(project_vars()["access_lead_hours"]))
    bound = timedelta(hours=float(project_vars()["access_removal_bound_hours"]))
    moments = scheduled_moments(provision_dag, FIRST_RUN, LAST_RUN)
    assert len(moments) >= 25 and all(b - a <= timedelta(hours=1) for a, b in zip(moments, moments[1:])), \
        "the default schedule must run at least hourly"
    write_day(landing, LAST_DAY, people(False), ORGS)
    write_day(landing, DAY_ONE, people(True), ORGS)

    # What the user needs, per person: the start of day one / the end of the last day, in UTC.
    hires = {f"P1{i}": datetime.combine(DAY_ONE, datetime.min.time(), ZoneInfo(z)) for i, z in enumerate(ZONES.values())}
    leavers = {f"P2{i}": datetime.combine(DAY_ONE, datetime.min.time(), ZoneInfo(z)) for i, z in enumerate(ZONES.values())}
    assert leavers["P21"].astimezone(timezone.utc).hour == 4    # New York's midnight is already EDT (UTC-4)
    # The run that must grant / remove each: the first scheduled moment that judges the start reached
    # (lead hours ahead) / the first at or after the end of the last day.
    grant_run = {p: next(t for t in moments if t + lead >= m) for p, m in hires.items()}
    remove_run = {p: next(t for t in moments if t >= m) for p, m in leavers.items()}
    for p, t in grant_run.items():    # one scheduled run before midnight local remains after the granting one
        assert t + timedelta(hours=1) < hires[p], (p, t)

    client = ScimClient(LmsConfig(*fresh_lms))
    run_of = {}
    for t in moments:
        run = provision_dag.test(logical_date=t)
        assert run.state == "success", t
        run_of[t] = run.run_id
        users, _groups = lms_state(client)
        active = {pid for pid, (a, *_rest) in users.items() if a}
        for p, first in grant_run.items():
            assert (p in active) == (t >= first), (t, p, "hire")
        for p in leavers:
            assert (p in active) == (t < remove_run[p]), (t, p, "leaver")
        assert (HR_LATE in active) == (t >= datetime(2026, 3, 9, tzinfo=timezone.utc)), (t, HR_LATE)
    client.close()

    with db.connect(fresh_db) as conn:
        # Runs with nothing due build nothing: the transform built at the first run, when the new file came,
        # and at the runs that grant or remove someone's access.
        built = {r[0] for r in conn.execute(
            "select run_key from audit.stage_runs where stage = 'transform' and not detail ? 'skipped'")}
        new_file = datetime(2026, 3, 9, tzinfo=timezone.utc)
        assert built == {run_of[t] for t in {moments[0], new_file, *grant_run.values(), *remove_run.values()}}
        assert len(built) < len(moments) / 2

        rows = {r[0]: r[1:] for r in conn.execute(
            """select person_id, event_type, run_logical_ts, target_at, latency_hours, on_time, cause, effective_basis
               from marts.access_events where event_type in ('access_granted', 'access_removed')
                 and cause <> 'initial_load'""")}
        seconds = dict(conn.execute(
            "select run_key, extract(epoch from max(started_at + seconds * interval '1 second') - min(started_at)) "
            "from audit.stage_runs group by run_key").fetchall())
    assert set(rows) == set(hires) | set(leavers) | {HR_LATE}, sorted(rows)
    for p, target in {**hires, **leavers}.items():
        kind, run_ts, target_at, latency, on_time, cause, basis = rows[p]
        expected_run = grant_run.get(p) or remove_run[p]
        assert kind == ("access_granted" if p in hires else "access_removed"), p
        assert run_ts == expected_run and target_at == target, (p, run_ts, target_at)
        # took effect: the run's logical moment + the time the run took to reach the write
        assert basis == "logical_moment_plus_elapsed"
        base = (expected_run - target).total_seconds() / 3600
        assert base <= float(latency) <= base + float(seconds[run_of[expected_run]]) / 3600 + 0.01, (p, latency)
        assert on_time is True and cause == "on_time", (p, on_time, cause)
        if p in hires:
            assert float(latency) < 0
        else:
            assert 0 <= float(latency) <= bound.total_seconds() / 3600
    kind, run_ts, target_at, latency, on_time, cause, _basis = rows[HR_LATE]
    assert (kind, run_ts, cause, on_time) == ("access_granted", new_file, "hr_late", False)
    assert float(latency) >= 9     # Tokyo's day one began at 15:00 UTC on the 8th; HR sent it at midnight UTC

    with db.connect(fresh_db) as conn:
        kpis = conn.execute(
            """select sum(hires), sum(hires_hr_late), sum(hires_before_day_one), sum(leavers),
                      sum(leavers_within_bound), max(hire_hours_max), max(leaver_hours_max)
               from marts.access_latency_by_run""").fetchone()
        per_run = dict(conn.execute("select run_key, hires_on_time_share from marts.access_latency_by_run "
                                    "where hires > hires_hr_late").fetchall())
        wrote = {r[0] for r in conn.execute(
            "select distinct p.run_key from sync.plans p join sync.ops o on o.plan_id = p.plan_id "
            "where o.status = 'applied'")}
    assert kpis[:5] == (7, 1, 6, 6, 6), kpis
    # The access page the last run wrote: its headline (Honolulu's leaver) and the trend of every run that
    # changed access.
    page = json.loads((landing.parent / "reports" / "access" / f"access_{DAY_ONE}.json").read_text())
    head = page["headline"]
    assert head["run_key"] == run_of[moments[-1]] and (head["leavers"], head["leavers_within_bound"]) == (1, 1), head
    assert {r["run_key"] for r in page["trend"]} == wrote and len(wrote) == len(page["trend"]) <= 30
    assert float(kpis[5]) < 0 and 0 <= float(kpis[6]) <= bound.total_seconds() / 3600, kpis
    assert per_run and all(share == 1 for share in per_run.values()), per_run
