"""The breaker holds a plan that blanks an attribute for many accounts (an export with an empty column),
or changes it for many (an export with two columns swapped): nothing reaches the LMS and the reason
names the attribute; a few legitimate blankings or changes are applied, a rebrand once approved.

The first test runs real pipeline days (ingest → staging → gate → dbt → plan → apply) against a real
Postgres and a real scim2-server. dbt dominates its time, so the legitimate case reuses day 2's
snapshot with the mart edited instead of a third day (the same for changes). The manager tests set
the marts directly (as tests/sync/test_groups_managers.py does): HR blanking or moving it vs. a manager
who leaves."""
from __future__ import annotations

import html
import shutil
from datetime import date
from pathlib import Path

import pytest

from hrlms import pipeline
from hrlms.sync.apply import apply_plan
from hrlms.sync.breaker import PlanHeld
from hrlms.sync.plan import make_plan
from hrlms.sync.scim import ENTERPRISE, LmsConfig, ScimClient
from hrlms.warehouse import db

from ..sources.hrfiles import ORG_CSV, csv_text, worker
from . import helpers
from .helpers import pid, set_desired

D1, D2 = date(2026, 2, 2), date(2026, 2, 3)
N = 40
_RESET = ("HRLMS_MAPPING", "HRLMS_MAX_DROP_SHARE", "HRLMS_MAX_QUARANTINE_SHARE", "HRLMS_MAX_GROWTH_FACTOR",
          "HRLMS_ORG_ROLLUP_GROUPS", "HRLMS_LRS_URL", "HRLMS_EXPORT_DIR", "HRLMS_BREAKER_MAX_SHARE",
          "HRLMS_BREAKER_MAX_COUNT", "HRLMS_BREAKER_MIN_COUNT", "HRLMS_BREAKER_MAX_CHANGE_SHARE",
          "HRLMS_BREAKER_MAX_CHANGE_COUNT")


def title(i: int) -> str:
    return "Director" if i == 1 else f"Analyst {i}"


def code(i: int) -> str:
    return f"J{100 + i}"


def q(sql: str, *args):
    with db.connect() as c:
        return c.execute(sql, args or None).fetchall()


def lms(client) -> dict[str, dict]:
    return {u["externalId"]: u for u in client.iter_users(page_size=500)}


def versions(client) -> dict[str, str]:
    """Every write bumps the user's meta.version."""
    return {k: u["meta"]["version"] for k, u in lms(client).items()}


def assert_forty_title_updates_held_and_nothing_sent(client, plan_id: int, before: dict[str, dict]) -> None:
    assert q("select op_type, status, count(*) from sync.ops where plan_id = %s group by 1, 2",
             plan_id) == [("update_user", "held", N)]
    after = lms(client)
    assert {k: u["meta"]["version"] for k, u in after.items()} == {
        k: u["meta"]["version"] for k, u in before.items()}                 # zero LMS writes
    assert {k: u["title"] for k, u in after.items()} == {pid(i): title(i) for i in range(1, N + 1)}


def manager(user: dict) -> str | None:
    return ((user.get(ENTERPRISE) or {}).get("manager") or {}).get("value")


def latest_plan():
    return q("select plan_id, status, held_reason, review from sync.plans order by plan_id desc limit 1")[0]


# -- through the pipeline --------------------------------------------------------------------------------

@pytest.fixture
def pipeline_env(fresh_db, fresh_lms, landing, tmp_path, monkeypatch):
    from hrlms import report
    from hrlms.quality import gate

    for var in _RESET:
        monkeypatch.delenv(var, raising=False)
    rules = tmp_path / "no_rules.yaml"
    rules.write_text("requirements: [{id: NONE, kind: course, title: none}]\n")
    monkeypatch.setenv("HRLMS_LEARNING_RULES", str(rules))
    # A GX context without the shared store's results: the gate rebuilds Data Docs from all of them.
    gx = tmp_path / "expectations"
    shutil.copytree(gate.GX_ROOT, gx, ignore=lambda d, names: [
        n for n in names if Path(d).name == "uncommitted" and n in ("validations", "data_docs")])
    monkeypatch.setattr(gate, "GX_ROOT", gx)
    monkeypatch.setattr(report, "GX_ROOT", gx)
    with ScimClient(LmsConfig(*fresh_lms)) as client:
        yield landing, client


def export(**over: str) -> list[dict[str, str]]:
    """P1 heads the company; P2..P40 report to P1, each with a title and job code of their own."""
    return [worker(1, **({"Job_Title": title(1), "Job_Code": code(1)} | over))] + [
        worker(i, **({"Job_Title": title(i), "Job_Code": code(i), "Manager_ID": pid(1)} | over))
        for i in range(2, N + 1)]


def run_day(landing: Path, day: date, rows: list[dict[str, str]]) -> dict[str, int]:
    """Land the day's files and run ingest → staging → gate → transform; returns the snapshots."""
    (landing / f"workers_{day.isoformat()}.csv").write_text(csv_text(rows))
    (landing / f"org_units_{day.isoformat()}.csv").write_text(ORG_CSV)
    key = f"blanking-{day.isoformat()}"
    snaps = pipeline.ingest(key, day)
    pipeline.stage_models(key, day, snaps)
    pipeline.gate(key, day, snaps)
    pipeline.transform(key, day, snaps)
    return snaps


def plan_and_apply(key: str, day: date, snaps: dict[str, int]) -> int:
    plan_id = pipeline.plan(key, day, snaps)["plan_id"]
    pipeline.apply(key, day, plan_id)
    return plan_id


def test_an_export_with_every_job_title_blank_is_held_two_blank_titles_are_applied(pipeline_env):
    landing, client = pipeline_env
    snaps = run_day(landing, D1, export())
    plan_and_apply("d1", D1, snaps)
    before = lms(client)
    assert len(before) == N and all(u["active"] for u in before.values())
    assert {k: u["title"] for k, u in before.items()} == {pid(i): title(i) for i in range(1, N + 1)}

    # Day 2: the export arrives with Job_Title empty in every row (the mapping does not require it, so
    # the gate accepts it) → 40 update_user ops that would wipe every title in the LMS.
    snaps = run_day(landing, D2, export(Job_Title=""))
    with pytest.raises(PlanHeld, match="40 title values blanked of 40 active accounts") as held:
        plan_and_apply("d2", D2, snaps)
    plan_id, status, reason, review = latest_plan()
    assert held.value.plan_id == plan_id and status == "held"
    assert reason == "40 title values blanked of 40 active accounts that have one (limit 5% or 500)"
    assert review["breaker"]["blanked"] == {"title": 40} and review["breaker"]["deactivations"] == 0
    assert_forty_title_updates_held_and_nothing_sent(client, plan_id, before)

    # The same snapshot, but only P5 and P6 lose their title (the mart as dbt would build it): applied.
    with db.connect() as c:
        c.execute("update marts.lms_desired_users set title = case when person_id = %s then 'Director' "
                  "else 'Analyst ' || ltrim(substr(person_id, 2), '0') end where person_id not in (%s, %s)",
                  (pid(1), pid(5), pid(6)))
    fixed = plan_and_apply("d2-fixed", D2, snaps)
    plan_id, status, reason, review = latest_plan()
    assert plan_id == fixed and status == "applied" and reason is None
    assert review["breaker"]["blanked"] == {"title": 2} and review["breaker"]["held"] is False
    after = lms(client)
    assert {k for k, u in after.items() if not u.get("title")} == {pid(5), pid(6)}
    assert after[pid(7)]["title"] == "Analyst 7"
    assert q("select distinct status from sync.plans where status <> 'applied' order by 1") == [("superseded",)]


def set_titles(**titles: str) -> None:
    """Edit the mart as dbt would have built it: everyone's title is title(i), except {person id: title}.
    Everyone is named in the dirty list, as a build's change set would name them (hrlms.warehouse.changes)."""
    from hrlms.warehouse.changes import mark_dirty

    with db.connect() as c:
        c.execute("update marts.lms_desired_users set title = case when person_id = %s then 'Director' "
                  "else 'Analyst ' || ltrim(substr(person_id, 2), '0') end", (pid(1),))
        for person_id, t in titles.items():
            c.execute("update marts.lms_desired_users set title = %s where person_id = %s", (t, person_id))
        mark_dirty(c, [r[0] for r in c.execute("select person_id from marts.lms_desired_users")], "hr_edit")


def test_an_export_with_job_title_and_job_code_swapped_is_held_a_few_new_titles_are_applied_a_rebrand_once_approved(
        pipeline_env, tmp_path, capsys):
    from hrlms.report import write_run_report
    from hrlms.sync.__main__ import main as sync_cli

    landing, client = pipeline_env
    snaps = run_day(landing, D1, export())
    plan_and_apply("d1", D1, snaps)
    assert latest_plan()[3]["breaker"]["changed"] == {}                  # creates are not changes
    before = lms(client)
    assert {k: u["title"] for k, u in before.items()} == {pid(i): title(i) for i in range(1, N + 1)}

    # Day 2: Job_Title and Job_Code swapped in every row. Nothing is blank, nobody leaves, the gate accepts
    # it: 40 update_user ops that would rewrite every title in the LMS with a job code.
    swapped = [r | {"Job_Title": r["Job_Code"], "Job_Code": r["Job_Title"]} for r in export()]
    snaps = run_day(landing, D2, swapped)
    with pytest.raises(PlanHeld, match="40 title values changed of 40 active accounts") as held:
        plan_and_apply("d2", D2, snaps)
    plan_id, status, reason, review = latest_plan()
    assert held.value.plan_id == plan_id and status == "held"
    assert reason == "40 title values changed of 40 active accounts that have one (limit 5%)"
    breaker = review["breaker"]
    assert breaker["blanked"] == {} and breaker["deactivations"] == 0 and breaker["max_change_share"] == 0.05
    samples = [{"person_id": pid(i), "name": before[pid(i)]["displayName"], "old": title(i), "new": code(i)}
               for i in range(1, 6)]
    assert breaker["changed"] == {"title": {"changed": 40, "base": 40, "held": True, "samples": samples}}
    assert_forty_title_updates_held_and_nothing_sent(client, plan_id, before)

    # What a person reads: show-plan and the run report name the attribute, the counts and the samples.
    capsys.readouterr()
    assert sync_cli(["show-plan", str(plan_id)]) == 0
    out = capsys.readouterr().out
    assert "title changed 40 of 40 accounts that have one (held)" in out
    assert f"{pid(1)} ({before[pid(1)]['displayName']}): 'Director' → 'J101'" in out
    with db.connect() as c:
        page = html.unescape(write_run_report(c, tmp_path / "reports", "d2", D2, plan_id).read_text())
    assert f"{pid(2)} ({before[pid(2)]['displayName']}): 'Analyst 2' → 'J102'" in page

    # The same snapshot as dbt would build it from a correct file in which P5 and P6 are promoted: applied.
    set_titles(**{pid(5): "Senior Analyst 5", pid(6): "Senior Analyst 6"})
    fixed = plan_and_apply("d2-fixed", D2, snaps)
    plan_id, status, reason, review = latest_plan()
    assert plan_id == fixed and status == "applied" and reason is None
    assert review["breaker"]["changed"] == {"title": {"changed": 2, "base": 40}}
    after = lms(client)
    assert (after[pid(5)]["title"], after[pid(7)]["title"]) == ("Senior Analyst 5", "Analyst 7")

    # A rebrand: every analyst becomes a consultant. Held like the swap; approved once, exactly that plan
    # is applied.
    set_titles(**{pid(i): f"Consultant {i}" for i in range(2, N + 1)})
    with pytest.raises(PlanHeld, match="39 title values changed of 40 active accounts"):
        plan_and_apply("d2-rebrand", D2, snaps)
    rebrand, status, _reason, review = latest_plan()
    assert status == "held" and review["breaker"]["changed"]["title"]["samples"][0] == {
        "person_id": pid(2), "name": before[pid(2)]["displayName"], "old": "Analyst 2", "new": "Consultant 2"}
    assert pipeline.decide_plan("d2-approve", D2, rebrand, "approved", "jane.doe")["writes"] == 39
    assert q("select status from sync.plans where plan_id = %s", rebrand) == [("applied",)]
    assert {k: u["title"] for k, u in lms(client).items()} == {
        pid(i): "Director" if i == 1 else f"Consultant {i}" for i in range(1, N + 1)}


# -- managers, marts set directly -------------------------------------------------------------------------

def person(i: int, **over):
    """helpers.person with this file's title, and P1 as everyone else's manager."""
    return helpers.person(i, **({"title": title(i), "manager_person_id": None if i == 1 else pid(1)} | over))


@pytest.fixture
def conn(fresh_db, monkeypatch):
    for var in _RESET:
        monkeypatch.delenv(var, raising=False)
    with helpers.desired_state_db(fresh_db, groups=False) as c:
        yield c


def test_managers_blanked_by_hr_are_held_managers_removed_because_the_manager_left_are_not(conn, client):
    set_desired(conn, [person(i) for i in range(1, N + 1)])
    p = make_plan(conn, logical_date=D1, snapshot_id=1)
    apply_plan(conn, p.plan_id, client)
    lms_p1 = lms(client)[pid(1)]["id"]
    assert {k for k, u in lms(client).items() if manager(u) == lms_p1} == {pid(i) for i in range(2, N + 1)}
    before = versions(client)

    # HR names no manager for anyone: 39 managers would be removed → held, nothing sent.
    set_desired(conn, [person(i, manager_person_id=None) for i in range(1, N + 1)])
    p = make_plan(conn, logical_date=D2, snapshot_id=2)
    assert p.held and p.counts == {"set_manager": 39}
    assert p.held_reasons == ["39 manager values blanked of 39 active accounts that have one (limit 5% or 500)"]
    assert apply_plan(conn, p.plan_id, client).writes == 0
    assert versions(client) == before

    # The manager leaves: their 39 reports lose their LMS manager, but HR still names one — that follows
    # from one deactivation, not a blanking. Not held.
    set_desired(conn, [person(1, is_active=False)] + [person(i) for i in range(2, N + 1)])
    p = make_plan(conn, logical_date=D2, snapshot_id=3)
    assert not p.held and p.counts == {"deactivate_user": 1, "set_manager": 39}
    review = conn.execute("select review -> 'breaker' from sync.plans where plan_id = %s", (p.plan_id,)).fetchone()[0]
    assert review["blanked"] == {}
    assert apply_plan(conn, p.plan_id, client).dead_letter == 0
    assert all(manager(u) is None for u in lms(client).values())


def test_managers_moved_en_masse_are_held_reports_moving_on_because_their_manager_left_are_not(
        conn, client, monkeypatch):
    set_desired(conn, [person(i) for i in range(1, N + 1)])
    apply_plan(conn, make_plan(conn, logical_date=D1, snapshot_id=1).plan_id, client)
    lms_ids = {k: u["id"] for k, u in lms(client).items()}
    before = versions(client)

    # HR names P2 as the manager of P3..P40 (a wrong manager column, or a reorg): 38 managers replaced → held.
    moved = [person(1), person(2)] + [person(i, manager_person_id=pid(2)) for i in range(3, N + 1)]
    set_desired(conn, moved)
    p = make_plan(conn, logical_date=D2, snapshot_id=2)
    assert p.held and p.counts == {"set_manager": 38}
    assert p.held_reasons == ["38 manager values changed of 39 active accounts that have one (limit 5%)"]
    review = conn.execute("select review -> 'breaker' from sync.plans where plan_id = %s", (p.plan_id,)).fetchone()[0]
    assert review["blanked"] == {} and review["changed"] == {"manager": {
        "changed": 38, "base": 39, "held": True,
        "samples": [{"person_id": pid(i), "name": f"G{i} F{i}", "old": pid(1), "new": pid(2)} for i in range(3, 8)]}}
    assert apply_plan(conn, p.plan_id, client).writes == 0
    assert versions(client) == before

    # HRLMS_BREAKER_MAX_CHANGE_SHARE allows more changes without allowing more deactivations.
    monkeypatch.setenv("HRLMS_BREAKER_MAX_CHANGE_SHARE", "1")
    assert not make_plan(conn, logical_date=D2, snapshot_id=2).held
    monkeypatch.delenv("HRLMS_BREAKER_MAX_CHANGE_SHARE")

    # P1 leaves and P2 succeeds them: 38 reports move from P1 to P2 because P1 left (one deactivation,
    # measured as such), P2 loses their manager. Not held.
    set_desired(conn, [person(1, is_active=False), person(2, manager_person_id=None)] + moved[2:])
    p = make_plan(conn, logical_date=D2, snapshot_id=3)
    assert not p.held and p.counts == {"deactivate_user": 1, "set_manager": 39}
    review = conn.execute("select review -> 'breaker' from sync.plans where plan_id = %s", (p.plan_id,)).fetchone()[0]
    assert review["changed"] == {} and review["blanked"] == {"manager": 1}
    assert apply_plan(conn, p.plan_id, client).dead_letter == 0
    assert {k: manager(u) for k, u in lms(client).items() if k != pid(1)} == {
        pid(i): None if i == 2 else lms_ids[pid(2)] for i in range(2, N + 1)}


def test_changes_are_limited_by_a_share_not_by_the_deactivation_count(monkeypatch):
    """At a million workers the ordinary daily transfers change ~1,000 departments: no mass rewrite.
    Deactivations keep their absolute limit; changes have one only when HRLMS_BREAKER_MAX_CHANGE_COUNT
    is set."""
    from hrlms.sync.breaker import Thresholds

    for name in ("HRLMS_BREAKER_MAX_SHARE", "HRLMS_BREAKER_MAX_COUNT", "HRLMS_BREAKER_MIN_COUNT",
                 "HRLMS_BREAKER_MAX_CHANGE_SHARE", "HRLMS_BREAKER_MAX_CHANGE_COUNT"):
        monkeypatch.delenv(name, raising=False)
    t = Thresholds.from_env()
    assert t.trips(1_250, 1_000_000)                       # 1,250 deactivations: held
    assert not t.change_trips(1_250, 1_000_000)            # 1,250 new departments of 1M: applied
    assert t.change_trips(50_001, 1_000_000)               # more than 5%: held
    assert not t.change_trips(10, 40) and t.change_trips(11, 40)   # the minimum count still applies
    monkeypatch.setenv("HRLMS_BREAKER_MAX_CHANGE_COUNT", "1000")
    t = Thresholds.from_env()
    assert t.change_trips(1_250, 1_000_000) and not t.change_trips(1_000, 1_000_000)
    assert t.change_limit() == "limit 5% or 1000"
    monkeypatch.setenv("HRLMS_BREAKER_MAX_CHANGE_SHARE", "0.5")
    assert not Thresholds.from_env().change_trips(400, 1_000) and Thresholds.from_env().trips(400, 1_000)
