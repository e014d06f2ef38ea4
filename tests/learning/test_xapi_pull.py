"""Posting to and pulling from a real Ralph LRS into raw_lms: idempotent, paged, late statements."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import date, datetime, timedelta, timezone

import psycopg
import pytest

from hrlms.devenv.ralph import LocalRalph
from hrlms.learning.simulator import simulate
from hrlms.learning.xapi import (
    STATEMENTS_PATH,
    VERBS,
    LrsConfig,
    lrs_config_from_env,
    post_statements,
    pull_statements,
    session,
)

LOGICAL_DATE = date(2026, 6, 30)


def assignments(prefix: str, people: int, requirements: int = 3) -> list[dict]:
    return [
        {"person_id": f"{prefix}-{p:04d}", "requirement_id": f"REQ-{r}",
         "assigned_on": date(2026, 1, 1) + timedelta(days=p % 60), "due_on": date(2026, 4, 30)}
        for p in range(people) for r in range(requirements)
    ]


def simulated(prefix: str, people: int, seed: int) -> list[dict]:
    """Statements of this test's own learners (its own actor home page, so a test can find its own)."""
    return simulate(assignments(prefix, people), logical_date=LOGICAL_DATE, seed=seed,
                    homepage=f"https://hr.example.com/{prefix}",
                    activity_base=f"https://lms.example.com/{prefix}/", completion_rate=0.8, in_progress_rate=0.1,
                    fail_rate=0.1)


def statement(verb: str, when: datetime, person: str = "late-learner") -> dict:
    return {"id": str(uuid.uuid4()),
            "actor": {"objectType": "Agent", "account": {"homePage": "https://hr.example.com/late", "name": person}},
            "verb": {"id": VERBS[verb]},
            "object": {"objectType": "Activity", "id": "https://lms.example.com/late/REQ-1"},
            "timestamp": when.isoformat()}


def stored_ids(conn: psycopg.Connection, ids: list[str]) -> list[str]:
    rows = conn.execute("select statement_id::text from raw_lms.xapi_statements where statement_id = any(%s::uuid[])",
                        (ids,)).fetchall()
    return [r[0] for r in rows]


def lrs_get(lrs: LrsConfig, **params: str) -> list[dict]:
    with session(lrs) as s:
        resp = s.get(lrs.url + STATEMENTS_PATH, params={"limit": 100, **params}, timeout=lrs.timeout)
    resp.raise_for_status()
    return resp.json()["statements"]


def test_posting_the_same_statements_twice_stores_them_once(lrs_config: LrsConfig) -> None:
    statements = simulated("post-twice", 20, seed=101)
    assert post_statements(lrs_config, statements, batch_size=25) == len(statements)
    # Patch 1 (fs writes append): every POST after the first used to fail with HTTP 500.
    assert post_statements(lrs_config, statements, batch_size=25) == 0
    person = statements[0]["actor"]
    mine = [s["id"] for s in statements if s["actor"] == person]
    got = [s["id"] for s in lrs_get(lrs_config, agent=json.dumps(person))]
    assert sorted(got) == sorted(mine)


def test_a_conflicting_id_skips_only_that_statement(lrs_config: LrsConfig, caplog: pytest.LogCaptureFixture) -> None:
    first = statement("completed", datetime(2026, 5, 1, 9, tzinfo=timezone.utc), "conflict-learner")
    assert post_statements(lrs_config, [first]) == 1
    different = {**first, "verb": {"id": VERBS["failed"]}}
    new = statement("passed", datetime(2026, 5, 1, 10, tzinfo=timezone.utc), "conflict-learner")
    with caplog.at_level(logging.WARNING, logger="hrlms.learning.xapi"):
        assert post_statements(lrs_config, [different, new, new]) == 1  # 409 for the batch → one by one
    assert first["id"] in caplog.text
    stored = {s["id"]: s["verb"]["id"] for s in lrs_get(lrs_config, agent=json.dumps(first["actor"]))}
    assert stored == {first["id"]: VERBS["completed"], new["id"]: VERBS["passed"]}


def test_statements_need_ids_to_be_posted(lrs_config: LrsConfig) -> None:
    anonymous = statement("launched", datetime(2026, 5, 1, tzinfo=timezone.utc))
    del anonymous["id"]
    with pytest.raises(ValueError, match="'id'"):
        post_statements(lrs_config, [anonymous])


def test_pull_pages_through_more_links_and_a_second_pull_adds_nothing(
    warehouse: psycopg.Connection, lrs_config: LrsConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HRLMS_XAPI_OVERLAP_HOURS", raising=False)  # the default: 72 h
    statements = simulated("pull-twice", 60, seed=202)
    assert len(statements) > 250
    post_statements(lrs_config, statements)
    ids = [s["id"] for s in statements]

    first = pull_statements(warehouse, lrs_config, run_key="first")
    in_lrs = first.fetched
    assert first.pages >= -(-in_lrs // 100) >= 3  # 100 a page, via `more`
    assert first.inserted == in_lrs and first.watermark_before is None
    assert sorted(stored_ids(warehouse, ids)) == sorted(ids)

    second = pull_statements(warehouse, lrs_config, run_key="second")
    assert second.inserted == 0
    assert second.watermark_before == first.watermark_after == second.watermark_after
    assert warehouse.execute("select count(*) from raw_lms.xapi_statements").fetchone()[0] == in_lrs
    pulls = warehouse.execute(
        "select run_key, pages, fetched, inserted, since, finished_at is not null "
        "from raw_lms.xapi_pulls order by pull_id"
    ).fetchall()
    assert pulls == [("first", first.pages, in_lrs, in_lrs, None, True),
                     ("second", second.pages, second.fetched, 0, first.watermark_after - timedelta(hours=72), True)]


def test_pulled_columns_come_from_the_statement(warehouse: psycopg.Connection, lrs_config: LrsConfig) -> None:
    statements = simulated("columns", 5, seed=303)
    post_statements(lrs_config, statements)
    pull_statements(warehouse, lrs_config)
    passed = next(s for s in statements if s["verb"]["id"] == VERBS["passed"])
    row = warehouse.execute(
        "select actor_account_name, actor_account_homepage, verb_id, object_id, result_score_scaled::float8, "
        "result_success, statement_timestamp, stored is not null, statement->'context' "
        "from raw_lms.xapi_statements where statement_id = %s", (passed["id"],)
    ).fetchone()
    assert row == (passed["actor"]["account"]["name"], passed["actor"]["account"]["homePage"], VERBS["passed"],
                   passed["object"]["id"], passed["result"]["score"]["scaled"], True,
                   datetime.fromisoformat(passed["timestamp"]), True, passed["context"])


def test_late_statements_inside_the_overlap_are_picked_up_older_ones_are_missed(
    warehouse: psycopg.Connection, lrs_config: LrsConfig
) -> None:
    # Far-future timestamps: this test's statements set the watermark whatever else the LRS holds.
    watermark = datetime(2099, 3, 10, 12, 0, tzinfo=timezone.utc)
    post_statements(lrs_config, [statement("launched", watermark - timedelta(hours=1)),
                                 statement("completed", watermark)])
    first = pull_statements(warehouse, lrs_config, overlap=timedelta(hours=72))
    assert first.watermark_after == watermark

    inside = statement("passed", watermark - timedelta(hours=71))   # stored late, happened inside the overlap
    outside = statement("passed", watermark - timedelta(hours=73))  # stored late, happened before it
    post_statements(lrs_config, [inside, outside])
    second = pull_statements(warehouse, lrs_config, overlap=timedelta(hours=72))
    assert second.inserted == 1
    assert stored_ids(warehouse, [inside["id"], outside["id"]]) == [inside["id"]]
    # Documented limit: a statement that reaches the LRS later than the overlap allows is missed by the
    # incremental pulls; a pull with a wider overlap (here: everything) recovers it.
    wide = pull_statements(warehouse, lrs_config, overlap=timedelta(days=365 * 100))
    assert wide.inserted == 1 and stored_ids(warehouse, [outside["id"]]) == [outside["id"]]


def test_a_crashed_pull_does_not_advance_the_watermark(warehouse: psycopg.Connection, lrs_config: LrsConfig) -> None:
    """Pages arrive in stored order, not timestamp order: after a crash the table can hold a late
    timestamp while older statements are still unfetched, so only finished pulls set the watermark."""
    statements = simulated("crash", 10, seed=404)
    post_statements(lrs_config, statements)
    # What a pull that died after its first page leaves behind: an unfinished pull row and one page.
    late = max(statements, key=lambda s: s["timestamp"])
    with warehouse.transaction():
        crashed = warehouse.execute(
            "insert into raw_lms.xapi_pulls (lrs_url, pages, fetched, inserted) values (%s, 1, 1, 1) returning pull_id",
            (lrs_config.url,)).fetchone()[0]
        warehouse.execute(
            "insert into raw_lms.xapi_statements (statement_id, statement, statement_timestamp, pull_id) "
            "values (%s, %s, %s, %s)", (late["id"], json.dumps(late), late["timestamp"], crashed))
    rerun = pull_statements(warehouse, lrs_config)
    assert rerun.watermark_before is None  # from the beginning, not from the crashed pull's late timestamp
    ids = [s["id"] for s in statements]
    assert sorted(stored_ids(warehouse, ids)) == sorted(ids)


def test_verb_and_activity_filters_match(lrs_config: LrsConfig) -> None:
    """Patch 2: Ralph compared IRI objects with strings, so these filters returned nothing at all."""
    statements = simulated("filters", 10, seed=505)
    post_statements(lrs_config, statements)
    passed = lrs_get(lrs_config, verb=VERBS["passed"])
    assert passed and {s["verb"]["id"] for s in passed} == {VERBS["passed"]}
    activity = statements[0]["object"]["id"]
    expected = sorted(s["id"] for s in statements if s["object"]["id"] == activity)
    assert len(expected) < 100  # one page holds them all
    got = lrs_get(lrs_config, activity=activity)
    assert sorted(s["id"] for s in got) == expected
    both = lrs_get(lrs_config, activity=activity, verb=VERBS["completed"])
    assert both and all(s["verb"]["id"] == VERBS["completed"] and s["object"]["id"] == activity for s in both)


def test_the_password_is_never_logged_or_stored(
    warehouse: psycopg.Connection, lrs: LocalRalph, lrs_config: LrsConfig, caplog: pytest.LogCaptureFixture
) -> None:
    post_statements(lrs_config, simulated("secrets", 3, seed=606))
    with caplog.at_level(logging.DEBUG):
        pull_statements(warehouse, lrs_config)
        wrong = LrsConfig(lrs_config.url, lrs_config.username, "not-the-password")
        with pytest.raises(RuntimeError, match="HTTP 401"):
            pull_statements(warehouse, wrong)
    password = lrs.password
    assert password not in caplog.text and "not-the-password" not in caplog.text
    assert password not in repr(lrs_config)
    assert password not in lrs.log_path.read_text()
    assert password not in lrs.auth_file.read_text()
    for table in ("raw_lms.xapi_statements", "raw_lms.xapi_pulls"):
        query = f"select count(*) from {table} t where t::text like %s"
        assert warehouse.execute(query, (f"%{password}%",)).fetchone()[0] == 0, table
    assert {r[0] for r in warehouse.execute("select lrs_url from raw_lms.xapi_pulls")} == {lrs.base_url}


def test_lrs_config_from_env_then_the_airflow_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HRLMS_LRS_URL", "HRLMS_LRS_USERNAME", "HRLMS_LRS_PASSWORD", "AIRFLOW_CONN_HRLMS_LRS"):
        monkeypatch.delenv(name, raising=False)
    assert lrs_config_from_env() is None  # neither: the caller skips the pull

    monkeypatch.setenv("AIRFLOW_CONN_HRLMS_LRS", json.dumps(
        {"conn_type": "http", "host": "lrs.example.com", "schema": "https", "port": 8443,
         "login": "airflow-user", "password": "airflow-secret"}))
    assert lrs_config_from_env() == LrsConfig("https://lrs.example.com:8443", "airflow-user", "airflow-secret")

    monkeypatch.setenv("HRLMS_LRS_URL", "http://127.0.0.1:8100/")
    monkeypatch.setenv("HRLMS_LRS_USERNAME", "env-user")
    monkeypatch.setenv("HRLMS_LRS_PASSWORD", "env-secret")
    assert lrs_config_from_env() == LrsConfig("http://127.0.0.1:8100", "env-user", "env-secret")
