"""Fixtures for the fault-injection tests: a warehouse with the desired-state marts (users with managers,
groups, members), a real scim2-server, FaultProxy instances in front of it, and the checks that the LMS
equals the desired state. Modelled on tests/sync/test_groups_managers.py."""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from hrlms.devenv.faultproxy import FaultProxy
from hrlms.sync.apply import ApplyHalted, apply_plan
from hrlms.sync.plan import make_plan
from hrlms.sync.scim import ENTERPRISE, LmsConfig, ScimClient, ScimError
from hrlms.warehouse import db

from ..sync.helpers import create_desired_marts, set_desired

D = date(2026, 1, 5)
# Client settings for the fault tests: short read timeout (the proxy's timeout_after_forward hangs longer),
# quicker backoff than production so the module stays within its time budget.
TIMEOUT = (2.0, 1.0)
HANG_SECONDS = 1.3


class World:
    """One warehouse database + one scim2-server; the desired state as last set."""

    def __init__(self, conn, lms_url: str, token: str):
        self.conn, self.lms_url, self.token = conn, lms_url, token
        self.people: list[dict[str, Any]] = []
        self.groups: dict[str, str] = {}
        self.members: dict[str, list[str]] = {}

    # -- desired state --------------------------------------------------------------------------------
    def set_desired(self, people: list[dict], groups: dict[str, str] | None = None,
                    members: dict[str, list[str]] | None = None) -> None:
        self.people, self.groups, self.members = people, dict(groups or {}), dict(members or {})
        set_desired(self.conn, people, self.groups, self.members)

    # -- clients --------------------------------------------------------------------------------------
    def direct(self) -> ScimClient:
        """A client straight to scim2-server (no proxy): to read what the LMS really holds."""
        return ScimClient(LmsConfig(self.lms_url, self.token, max_rps=0))

    def client(self, base_url: str, pool_size: int = 8, **kw: Any) -> ScimClient:
        kw.setdefault("timeout", TIMEOUT)
        kw.setdefault("backoff_base", 0.1)
        kw.setdefault("max_rps", 0)
        return ScimClient(LmsConfig(base_url, self.token, **kw), pool_size=pool_size)

    # -- running --------------------------------------------------------------------------------------
    def count(self, sql: str, *args: Any) -> int:
        return self.conn.execute(sql, args).fetchone()[0]

    def converge(self, client: ScimClient, *, max_rounds: int = 25, **apply_kw: Any) -> dict[str, Any]:
        """Plan + apply until a plan is empty, as the scheduler would run after failed/partial runs.
        A deferral (escrow backoff) is waited out (the test sets a small HRLMS_ESCROW_BASE_SECONDS)."""
        figures: dict[str, Any] = {"rounds": 0, "halts": 0, "failed_runs": 0, "deferred": 0, "escrow": 0,
                                   "dead_letter": 0, "writes": 0}
        for _ in range(max_rounds):
            plan = make_plan(self.conn, logical_date=D, snapshot_id=1)
            if plan.total == 0:
                return figures
            assert not getattr(plan, "held", False), "the breaker held the plan"
            figures["rounds"] += 1
            try:
                res = apply_plan(self.conn, plan.plan_id, client, **apply_kw)
            except ApplyHalted as halted:
                res = halted.result
                figures["halts"] += 1
            except ScimError:     # e.g. GET /ServiceProviderConfig failed on every attempt: the run fails
                figures["failed_runs"] += 1
                continue
            figures["deferred"] += res.deferred
            figures["escrow"] += res.escrow
            figures["dead_letter"] += res.dead_letter
            figures["writes"] += res.writes
            if res.deferred:
                wait = self.conn.execute(
                    "select extract(epoch from min(next_attempt_at) - clock_timestamp()) from sync.ops "
                    "where plan_id = %s and status = 'pending'", (plan.plan_id,)).fetchone()[0]
                time.sleep(min(5.0, max(0.0, float(wait or 0))))
        raise AssertionError(f"no convergence after {max_rounds} rounds: {figures}")

    # -- checks ---------------------------------------------------------------------------------------
    def assert_lms_equals_desired(self, *, ever_active: set[str]) -> dict[str, int]:
        """The LMS, read directly, equals the desired state: users (attributes, active), managers, groups
        (one per key, names, members); no duplicate externalIds; nothing left pending/escrowed."""
        with self.direct() as lms:
            users = list(lms.iter_users())
            groups = [lms.get_group(g["id"]) for g in lms.iter_groups()]
        user_ids = Counter(u.get("externalId") for u in users)
        group_ids = Counter(g.get("externalId") for g in groups)
        dup_users = {k: n for k, n in user_ids.items() if n > 1}
        dup_groups = {k: n for k, n in group_ids.items() if n > 1}
        assert not dup_users and not dup_groups, f"duplicates: users {dup_users}, groups {dup_groups}"

        desired = {p["person_id"]: p for p in self.people}
        by_ext = {u["externalId"]: u for u in users}
        lms_id = {ext: u["id"] for ext, u in by_ext.items()}
        assert set(by_ext) == ever_active, (sorted(set(by_ext) - ever_active)[:5], sorted(ever_active - set(by_ext))[:5])
        active_now = {p for p, row in desired.items() if row["is_active"]}
        wrong = []
        for ext, u in by_ext.items():
            row = desired[ext]
            got = {"user_name": u.get("userName"), "given_name": (u.get("name") or {}).get("givenName"),
                   "family_name": (u.get("name") or {}).get("familyName"), "display_name": u.get("displayName"),
                   "email": ((u.get("emails") or [{}])[0]).get("value"), "title": u.get("title"),
                   "employee_number": (u.get(ENTERPRISE) or {}).get("employeeNumber"),
                   "department": (u.get(ENTERPRISE) or {}).get("department"), "is_active": u.get("active")}
            want = {k: row[k] for k in got}
            mgr = row["manager_person_id"]
            want_mgr = lms_id.get(mgr) if row["is_active"] and mgr and mgr != ext and mgr in active_now else None
            got_mgr = ((u.get(ENTERPRISE) or {}).get("manager") or {}).get("value")
            if row["is_active"]:     # a deactivated account keeps whatever manager it had
                got["manager"], want["manager"] = got_mgr, want_mgr
            if got != want:
                wrong.append((ext, {k: (got[k], want[k]) for k in got if got[k] != want[k]}))
        assert not wrong, f"{len(wrong)} users differ from the desired state, e.g. {wrong[:3]}"

        ext_by_lms = {u["id"]: u["externalId"] for u in users}
        assert set(group_ids) == set(self.groups), (set(group_ids), set(self.groups))
        for g in groups:
            key = g["externalId"]
            assert g.get("displayName") == self.groups[key], (key, g.get("displayName"))
            got_members = sorted(ext_by_lms.get(m["value"], m["value"]) for m in g.get("members") or [])
            want_members = sorted(p for p in self.members.get(key, []) if p in active_now)
            assert got_members == want_members, (key, len(got_members), len(want_members))

        left = self.count("select count(*) from sync.ops where status in ('pending', 'sending', 'escrow')")
        dead = self.count("select count(*) from sync.ops where status = 'dead_letter'")
        assert left == 0 and dead == 0, f"ops left: {left} pending/sending/escrow, {dead} dead letters"
        assert make_plan(self.conn, logical_date=D, snapshot_id=1).total == 0, "a change was lost"
        # What we recorded matches the LMS (ids), so the next diff starts from the truth.
        recorded = dict(self.conn.execute("select person_id, lms_id from sync.applied_users").fetchall())
        assert recorded == lms_id
        return {"users": len(users), "groups": len(groups), "duplicate_external_ids": 0, "diff": 0}


@pytest.fixture
def world(fresh_db: str, fresh_lms: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    # These tests prove the transport, not the deactivation breaker: day-2 churn must not be held.
    monkeypatch.setenv("HRLMS_BREAKER_MAX_SHARE", "1")
    monkeypatch.setenv("HRLMS_BREAKER_MAX_COUNT", "1000000")
    monkeypatch.delenv("HRLMS_BREAKER_MAX_CHANGE_SHARE", raising=False)     # follows MAX_SHARE
    monkeypatch.delenv("HRLMS_BREAKER_MAX_CHANGE_COUNT", raising=False)
    with db.connect(fresh_db) as conn:
        db.bootstrap(conn)
        create_desired_marts(conn)
        yield World(conn, *fresh_lms)


@pytest.fixture
def make_proxy(fresh_lms: tuple[str, str]) -> Iterator:
    """FaultProxy factory in front of this test's scim2-server; every proxy is stopped at teardown."""
    proxies: list[FaultProxy] = []

    def make(**kw: Any) -> FaultProxy:
        kw.setdefault("hang_seconds", HANG_SECONDS)
        proxy = FaultProxy(fresh_lms[0], **kw).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()
