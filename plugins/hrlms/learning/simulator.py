"""Deterministic learner activity: cmi5-style xAPI statements for assignments (demo and tests).

Why: the pull from the LRS (:mod:`hrlms.learning.xapi`) and the completion models need realistic
traffic — launches that never finish, failed attempts retried later, completions after the due
date — without a real LMS.

Deterministic: the statements depend only on the assignments, the seed and the logical date (never
on the clock), each person × requirement draws from its own ``random.Random`` seeded with
``(seed, person, requirement)`` so adding an assignment does not change the others, and statement
ids are ``uuid5(seed, person, requirement, seq)`` — re-simulating and re-posting is a no-op in the
LRS.  Each learner's timeline is drawn independently of the logical date, which only cuts it off:
every timestamp lies between ``assigned_on`` 00:00 UTC and ``logical_date`` 23:59:59 UTC, and the
statements simulated for one date are a prefix of those for any later date (same ids, same
content), so a daily run posts only what happened since.

One session (an AU launch) is ``launched → initialized → [passed → completed | failed] →
terminated``, with cmi5's registration (one per person × requirement), session id and category.
"""
from __future__ import annotations

import gc
import hashlib
import random
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from typing import Any

from hrlms.learning.xapi import VERBS

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:hrlms:learning:simulator")
PASS_MARK = 0.7
LATE_SHARE = 0.15  # share of first launches after the due date
LATE_WINDOW_DAYS = 30
OPEN_WINDOW_DAYS = 60  # first launch within this many days of assignment when nothing is due
RETRY_DAYS = (1.0, 14.0)  # a failed attempt is retried this many days later
CMI5_CATEGORY = "https://w3id.org/xapi/cmi5/context/categories/cmi5"
CMI5_SESSION_ID = "https://w3id.org/xapi/cmi5/context/extensions/sessionid"
_NAMESPACE_SHA1 = hashlib.sha1(NAMESPACE.bytes)


def simulate(
    assignments: Iterable[Mapping[str, Any]],
    *,
    logical_date: date,
    seed: int,
    homepage: str = "https://hr.example.com",
    activity_base: str = "https://lms.example.com/xapi/activities/",
    completion_rate: float = 0.6,
    in_progress_rate: float = 0.15,
    fail_rate: float = 0.1,
) -> list[dict[str, Any]]:
    """Statements for ``assignments`` (person_id, requirement_id, assigned_on, due_on, optional name).

    Per person × requirement: ``completion_rate`` complete it (a ``fail_rate`` share of them after
    a failed attempt), ``in_progress_rate`` launch it without finishing, ``fail_rate`` fail it and
    stop, and the rest have not started (no statements).
    """
    if min(completion_rate, in_progress_rate, fail_rate) < 0 or completion_rate + in_progress_rate + fail_rate > 1:
        raise ValueError("completion_rate, in_progress_rate and fail_rate must be ≥ 0 and add up to ≤ 1")
    sim = _Simulator(seed, homepage, activity_base, datetime.combine(logical_date, time(23, 59, 59)))
    thresholds = (completion_rate, completion_rate + in_progress_rate, completion_rate + in_progress_rate + fail_rate)
    out: list[dict[str, Any]] = []
    with _gc_paused():
        for assignment in assignments:
            out.extend(sim.learner(assignment, thresholds, fail_rate))
    return out


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: statements are acyclic plain dicts, and with it on, its
    full passes rescan the growing result again and again (measured: 2-3× slower at 150k statements)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Simulator:
    """The run-wide parameters; ``end`` is the logical date's last second (datetimes here are naive UTC)."""

    def __init__(self, seed: int, homepage: str, activity_base: str, end: datetime) -> None:
        self.seed, self.homepage, self.activity_base, self.end = seed, homepage, activity_base, end

    def learner(self, a: Mapping[str, Any], thresholds: tuple[float, float, float], fail_rate: float) -> list[dict]:
        """The statements of one person × requirement."""
        person, requirement = str(a["person_id"]), str(a["requirement_id"])
        start = datetime.combine(a["assigned_on"], time(0))
        if start > self.end:
            return []
        due_on: date | None = a.get("due_on")
        due_end = datetime.combine(due_on, time(23, 59, 59)) if due_on else None
        rng = random.Random(f"{self.seed}:{person}:{requirement}")
        draw = rng.random()
        if draw >= thresholds[2]:
            return []
        run = _Run(self, rng, person, requirement, a.get("name") or requirement)
        at = _first_launch(rng, start, due_end)
        if draw < thresholds[0]:  # completes, maybe after a failed attempt
            if rng.random() < fail_rate:
                if not run.session(at, "failed"):
                    return run.statements
                at += timedelta(seconds=int(rng.uniform(*RETRY_DAYS) * 86400))
            run.session(at, "passed")
        elif draw < thresholds[1]:
            run.session(at, None)
        else:
            run.session(at, "failed")
        return run.statements


class _Run:
    """Statements of one person × requirement, numbered in order for their uuid5 ids."""

    def __init__(self, sim: _Simulator, rng: random.Random, person: str, requirement: str, name: str) -> None:
        self.sim, self.rng, self.person, self.requirement, self.name = sim, rng, person, requirement, name
        self.key = f"{sim.seed}:{person}:{requirement}"
        self.registration = uuid5(f"{self.key}:registration")
        self.statements: list[dict[str, Any]] = []
        self.sessions = 0

    def session(self, at: datetime, outcome: str | None) -> bool:
        """One launch; ``outcome`` passed/failed/None (left unfinished).  False if it ran past the end."""
        self.sessions += 1
        session_id = uuid5(f"{self.key}:session:{self.sessions}")
        rng = self.rng
        steps: list[tuple[str, datetime, dict[str, Any] | None]] = [("launched", at, None)]
        began = at + timedelta(seconds=rng.randint(2, 30))
        steps.append(("initialized", began, None))
        t = began + timedelta(seconds=rng.randint(5 * 60, 90 * 60))
        if outcome == "passed":
            steps.append(("passed", t, {"score": {"scaled": round(rng.uniform(PASS_MARK, 1.0), 2)},
                                        "success": True, "duration": _duration(t - began)}))
            t += timedelta(seconds=rng.randint(1, 5))
            steps.append(("completed", t, {"completion": True, "duration": _duration(t - began)}))
        elif outcome == "failed":
            steps.append(("failed", t, {"score": {"scaled": round(rng.uniform(0.2, PASS_MARK - 0.01), 2)},
                                        "success": False, "duration": _duration(t - began)}))
        if outcome is not None or rng.random() < 0.5:  # an unfinished session may still be closed
            t += timedelta(seconds=rng.randint(1, 10))
            steps.append(("terminated", t, {"duration": _duration(t - began)}))
        for verb, when, result in steps:
            if when > self.sim.end:
                return False
            self.statements.append(self._statement(verb, when, result, session_id))
        return True

    def _statement(self, verb: str, when: datetime, result: dict[str, Any] | None, session_id: str) -> dict[str, Any]:
        statement: dict[str, Any] = {
            "id": uuid5(f"{self.key}:{len(self.statements)}"),
            "actor": {"objectType": "Agent", "account": {"homePage": self.sim.homepage, "name": self.person}},
            "verb": {"id": VERBS[verb], "display": {"en-US": verb}},
            "object": {"objectType": "Activity", "id": self.sim.activity_base + self.requirement,
                       "definition": {"name": {"en-US": self.name}}},
            "context": {"registration": self.registration,
                        "contextActivities": {"category": [{"id": CMI5_CATEGORY}]},
                        "extensions": {CMI5_SESSION_ID: session_id}},
            "timestamp": when.isoformat() + "Z",  # naive UTC, whole seconds
        }
        if result is not None:
            statement["result"] = result
        return statement


def uuid5(name: str) -> str:
    """``str(uuid.uuid5(NAMESPACE, name))``, 3× faster (the namespace is hashed once): ids are most of
    the simulator's time."""
    sha = _NAMESPACE_SHA1.copy()
    sha.update(name.encode())
    raw = bytearray(sha.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _first_launch(rng: random.Random, start: datetime, due_end: datetime | None) -> datetime:
    """When the learner first opens it: before the due date, or (``LATE_SHARE``) up to
    ``LATE_WINDOW_DAYS`` after it; within ``OPEN_WINDOW_DAYS`` of assignment when nothing is due."""
    if due_end is None:
        low, high = start, start + timedelta(days=OPEN_WINDOW_DAYS)
    elif due_end < start or rng.random() < LATE_SHARE:
        low = max(due_end, start)
        high = low + timedelta(days=LATE_WINDOW_DAYS)
    else:
        low, high = start, due_end
    return low + timedelta(seconds=int(rng.random() * (high - low).total_seconds()))


def _duration(delta: timedelta) -> str:
    """ISO 8601 duration in whole seconds, as xAPI's ``result.duration``."""
    return f"PT{int(delta.total_seconds())}S"
