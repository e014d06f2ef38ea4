"""The learner-activity simulator: deterministic, within its dates, realistic enough for the models."""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from datetime import date, datetime, time, timedelta, timezone

import pytest

from hrlms.learning.simulator import NAMESPACE, PASS_MARK, simulate
from hrlms.learning.xapi import VERBS

LOGICAL_DATE = date(2026, 9, 30)
END = datetime.combine(LOGICAL_DATE, time(23, 59, 59), timezone.utc)
VERB_NAMES = {iri: name for name, iri in VERBS.items()}


def assignments(people: int = 400) -> list[dict]:
    """Several requirements a person, assigned over the year, some with a due date, some without."""
    rows = []
    for p in range(people):
        for r, due_days in enumerate((30, 90, None)):
            assigned = date(2026, 1, 1) + timedelta(days=(p * 7 + r * 11) % 240)
            rows.append({"person_id": f"P{p:05d}", "requirement_id": f"REQ-{r}", "assigned_on": assigned,
                         "due_on": assigned + timedelta(days=due_days) if due_days else None})
    return rows


def by_learner(statements: list[dict]) -> dict[tuple[str, str], list[dict]]:
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for s in statements:
        grouped[(s["actor"]["account"]["name"], s["object"]["id"].rsplit("/", 1)[-1])].append(s)
    return grouped


def ts(statement: dict) -> datetime:
    return datetime.fromisoformat(statement["timestamp"])


def test_same_seed_same_statements_other_seed_other_statements() -> None:
    rows = assignments(100)
    first = simulate(rows, logical_date=LOGICAL_DATE, seed=1)
    assert first == simulate(rows, logical_date=LOGICAL_DATE, seed=1)
    assert first != simulate(rows, logical_date=LOGICAL_DATE, seed=2)
    # Each learner draws on their own: dropping others changes nothing for them.
    assert simulate(rows[:3], logical_date=LOGICAL_DATE, seed=1) == [
        s for s in first if s["actor"]["account"]["name"] == "P00000"]


def test_ids_are_uuid5_of_seed_person_requirement_and_sequence() -> None:
    statements = simulate(assignments(50), logical_date=LOGICAL_DATE, seed=9)
    for (person, requirement), learner in by_learner(statements).items():
        assert [s["id"] for s in learner] == [
            str(uuid.uuid5(NAMESPACE, f"9:{person}:{requirement}:{seq}")) for seq in range(len(learner))]
    assert len({s["id"] for s in statements}) == len(statements)


def test_timestamps_lie_between_assignment_and_the_end_of_the_logical_date() -> None:
    rows = assignments()
    assigned = {(r["person_id"], r["requirement_id"]): r["assigned_on"] for r in rows}
    statements = simulate(rows, logical_date=LOGICAL_DATE, seed=3)
    assert statements
    for s in statements:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s["timestamp"])
        key = (s["actor"]["account"]["name"], s["object"]["id"].rsplit("/", 1)[-1])
        assert datetime.combine(assigned[key], time(0), timezone.utc) <= ts(s) <= END
    future = [{**rows[0], "assigned_on": LOGICAL_DATE + timedelta(days=1)}]
    assert simulate(future, logical_date=LOGICAL_DATE, seed=3) == []


def test_an_earlier_logical_date_gives_a_prefix_of_the_same_statements() -> None:
    rows = assignments(200)
    later = {s["id"]: s for s in simulate(rows, logical_date=LOGICAL_DATE, seed=4)}
    earlier = simulate(rows, logical_date=date(2026, 5, 31), seed=4)
    assert 0 < len(earlier) < len(later)
    assert all(later[s["id"]] == s for s in earlier)


def test_outcomes_look_like_a_learning_population() -> None:
    rows = assignments()
    statements = simulate(rows, logical_date=date(2027, 12, 31), seed=5)
    learners = by_learner(statements)
    verbs = {key: [VERB_NAMES[s["verb"]["id"]] for s in learner] for key, learner in learners.items()}
    outcome = Counter("completed" if "completed" in v else "failed" if "failed" in v else "in_progress"
                      for v in verbs.values())
    share = {k: n / len(rows) for k, n in outcome.items()}
    assert 0.5 < share["completed"] < 0.7 and 0.1 < share["in_progress"] < 0.2 and 0.05 < share["failed"] < 0.15
    assert 0.1 < 1 - len(learners) / len(rows) < 0.2  # not started: no statements
    for v in verbs.values():
        assert v[:2] == ["launched", "initialized"]
    retried = [v for v in verbs.values() if "failed" in v and "passed" in v]
    assert retried and all(v.index("failed") < v.index("passed") for v in retried)
    for s in statements:
        score = s.get("result", {}).get("score", {}).get("scaled")
        if s["verb"]["id"] == VERBS["passed"]:
            assert PASS_MARK <= score <= 1 and s["result"]["success"] is True
        elif s["verb"]["id"] == VERBS["failed"]:
            assert 0 <= score < PASS_MARK and s["result"]["success"] is False
    due = {(r["person_id"], r["requirement_id"]): r["due_on"] for r in rows}
    completed_late = [
        key for key, learner in learners.items()
        if due[key] and any(s["verb"]["id"] == VERBS["completed"] and ts(s).date() > due[key] for s in learner)]
    assert 0 < len(completed_late) < len(learners) / 4


def test_statements_are_cmi5_shaped() -> None:
    learner = next(iter(by_learner(simulate(assignments(5), logical_date=LOGICAL_DATE, seed=6,
                                            homepage="https://hr.example.org")).values()))
    registrations = {s["context"]["registration"] for s in learner}
    assert len(registrations) == 1 and uuid.UUID(registrations.pop())
    for s in learner:
        assert s["actor"] == {"objectType": "Agent",
                              "account": {"homePage": "https://hr.example.org", "name": s["actor"]["account"]["name"]}}
        assert s["object"]["objectType"] == "Activity"
        assert s["object"]["id"].startswith("https://lms.example.com/xapi/activities/REQ-")


def test_rates_must_make_a_distribution() -> None:
    with pytest.raises(ValueError, match="add up"):
        simulate(assignments(1), logical_date=LOGICAL_DATE, seed=1, completion_rate=0.8, in_progress_rate=0.3)
