"""The corpus harness: a provisioned baseline, later logical dates on top of it, and what each run did.

A run executes the DAG's stages in its order (ingest → staging → gate → transform → plan → apply) and
stops at the first stage that raises, as the DAG does; then, whatever happened, the enrolment export
(which publishes only what an applied plan delivered) and the report. What the LMS received is read
from three places: ``sync.ops`` (what was planned and sent), the scim2-server access log (every
non-GET request is a write) and the LMS's own records (``meta.version`` changes on every write).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from hrlms import pipeline
from hrlms.sync.scim import ENTERPRISE, LmsConfig, ScimClient
from hrlms.warehouse import db

from ..sources.hrfiles import HEADER, ORG_CSV, csv_text, worker

BASE_DAY = date(2026, 3, 2)
N_WORKERS = 50
STAGES = ("ingest", "staging", "gate", "transform", "plan", "apply")
_WRITE = re.compile(r'"(POST|PUT|PATCH|DELETE) ')


def pid(i: int) -> str:
    return f"P{i:07d}"


def baseline_rows() -> dict[int, dict[str, str]]:
    """50 workers: P1 heads the company (ORG0001), P2..P10 report to P1, P11..P50 sit in Finance
    (ORG0002) and report to P2."""
    rows = {1: worker(1, Org_Unit="ORG0001")}
    for i in range(2, 11):
        rows[i] = worker(i, Org_Unit="ORG0001", Manager_ID=pid(1))
    for i in range(11, N_WORKERS + 1):
        rows[i] = worker(i, Org_Unit="ORG0002", Manager_ID=pid(2))
    return rows


@dataclass
class Run:
    day: date
    run_key: str
    failed_stage: str | None = None
    error: BaseException | None = None
    snapshots: dict[str, Any] = field(default_factory=dict)
    plan_id: int | None = None
    ops: list[tuple] = field(default_factory=list)   # (op_type, person_id or group_key, changed_fields, status, members)
    lms_requests: list[str] = field(default_factory=list)  # non-GET requests the LMS received during the run
    report_path: Path | None = None
    export: dict[str, Any] = field(default_factory=dict)   # what the export stage did (published / held / why)
    report_error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.failed_stage is None

    def op_set(self, *types: str) -> set[tuple[str, str]]:
        return {(t, k) for t, k, _f, _s, _m in self.ops if not types or t in types}


class Corpus:
    def __init__(self, *, url: str, lms_url: str, lms_token: str, scim_log: Path, landing: Path, reports: Path):
        self.url, self.scim_log, self.landing, self.reports = url, scim_log, landing, reports
        self.lms = LmsConfig(lms_url, lms_token)
        self.rows = baseline_rows()           # the current good HR state (accepted cases move it on)
        self._day = BASE_DAY
        self.runs: list[Run] = []

    # -- files -------------------------------------------------------------------------------------
    def next_day(self) -> date:
        self._day += timedelta(days=1)
        return self._day

    def good_rows(self) -> list[dict[str, str]]:
        return [dict(r) for _i, r in sorted(self.rows.items())]

    def good_csv(self, **kw: Any) -> str:
        return csv_text(self.good_rows(), **kw)

    def land(self, day: date, workers: bytes | str | None, org: bytes | str | None = ORG_CSV) -> Path:
        """Write the day's files; None leaves a file out. Returns the workers file's path."""
        path = self.landing / f"workers_{day.isoformat()}.csv"
        for p, content in ((path, workers), (self.landing / f"org_units_{day.isoformat()}.csv", org)):
            if content is None:
                p.unlink(missing_ok=True)
            else:
                p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path

    # -- runs --------------------------------------------------------------------------------------
    def run(self, day: date, *, until: str = "apply") -> Run:
        run = Run(day, f"corpus-{day.isoformat()}")
        before = self._write_lines()
        stages = STAGES[: STAGES.index(until) + 1]
        snaps: dict[str, Any] = {}
        try:
            for stage in stages:
                run.failed_stage = stage
                if stage == "ingest":
                    snaps = pipeline.ingest(run.run_key, day)
                    run.snapshots = snaps
                elif stage == "staging":
                    pipeline.stage_models(run.run_key, day, snaps)
                elif stage == "gate":
                    pipeline.gate(run.run_key, day, snaps)
                elif stage == "transform":
                    pipeline.transform(run.run_key, day, snaps)
                elif stage == "plan":
                    run.plan_id = pipeline.plan(run.run_key, day, snaps)["plan_id"]
                elif stage == "apply":
                    pipeline.apply(run.run_key, day, run.plan_id)
            run.failed_stage = None
        except Exception as exc:  # noqa: BLE001 - any stage failure stops the DAG here; export and report still run
            run.error = exc
        if until == "apply":
            run.export = pipeline.export_enrolments(run.run_key, day)
        try:
            run.report_path = Path(pipeline.report(run.run_key, day))
        except pipeline.RunFailed as exc:
            run.report_error = exc
            m = re.search(r"run report: (.+)$", str(exc))
            run.report_path = Path(m.group(1).strip()) if m else None
        if run.plan_id is not None:
            run.ops = self.sql("select op_type, coalesce(person_id, group_key), changed_fields, status, members "
                               "from sync.ops where plan_id = %s order by op_id", run.plan_id)
        run.lms_requests = self._write_lines()[len(before):]
        self.runs.append(run)
        return run

    def provision_baseline(self) -> None:
        day = BASE_DAY
        self.land(day, self.good_csv())
        run = self.run(day)
        if not run.ok:
            raise AssertionError(f"baseline run failed at {run.failed_stage}: {run.error}") from run.error
        users = self.lms_users()
        assert len(users) == N_WORKERS and all(u["active"] for u in users.values())

    # -- reading -----------------------------------------------------------------------------------
    def sql(self, query: str, *args: Any) -> list[tuple]:
        with db.connect(self.url) as conn:
            return conn.execute(query, args or None).fetchall()

    def _write_lines(self) -> list[str]:
        time.sleep(0.05)   # the access-log line follows the response
        text = self.scim_log.read_text(encoding="utf-8", errors="replace")
        return [line for line in text.splitlines() if _WRITE.search(line)]

    def lms_users(self) -> dict[str, dict[str, Any]]:
        with ScimClient(self.lms) as client:
            return {u["externalId"]: u for u in client.iter_users()}

    def lms_groups(self) -> dict[str, dict[str, Any]]:
        with ScimClient(self.lms) as client:
            return {g["externalId"]: g for g in client.iter_groups()}

    def lms_state(self) -> dict[str, Any]:
        """Everything that identifies a write: each resource's version (bumped by every write)."""
        users = {k: u["meta"]["version"] for k, u in self.lms_users().items()}
        groups = {k: (g["meta"]["version"], len(g.get("members") or [])) for k, g in self.lms_groups().items()}
        return {"users": users, "groups": groups}

    def lms_manager(self, user: dict[str, Any]) -> str | None:
        return ((user.get(ENTERPRISE) or {}).get("manager") or {}).get("value")


__all__ = [
    "BASE_DAY",
    "HEADER",
    "N_WORKERS",
    "ORG_CSV",
    "Corpus",
    "Run",
    "baseline_rows",
    "csv_text",
    "pid",
    "worker",
]
