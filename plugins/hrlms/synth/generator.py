"""Deterministic synthetic HR exports: full daily snapshots + truth files.

A SyntheticHR holds one in-memory population and moves it forward a day at a time (change sets
applied in place), so day N of a 1M-worker run costs about as much as day 1. Every random draw
comes from numpy generators seeded by (seed, day, purpose): same seed -> byte-identical files.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Callable

import numpy as np

from .changes import Churn, apply_day
from .messiness import Messiness
from .names import build_pools
from .population import Population, build_population
from .render import ORG_COLUMNS, WORKER_COLUMNS, RenderedDay, org_records, render_day
from .writer import write_org_units, write_truth, write_workers

_CHANGES, _MESS = 1, 2
Progress = Callable[[str], None]


@dataclass(frozen=True)
class DayFiles:
    """Paths and counts of one written day."""

    day: date
    workers_path: Path
    org_units_path: Path
    truth_path: Path
    persons: int
    rows: int
    org_units: int
    defects: int
    changes: int


def file_names(day: date, fmt: str = "csv") -> tuple[str, str, str]:
    """workers_/org_units_/truth_ file names for a day (mapping: workers_{ds}.csv)."""
    ds = day.isoformat()
    return f"workers_{ds}.{fmt}", f"org_units_{ds}.{fmt}", f"truth_{ds}.jsonl"


@dataclass
class SyntheticHR:
    """One seeded population moving forward day by day (never backwards)."""

    workers: int = 10_000
    start: date = date(2026, 1, 5)
    seed: int = 42
    churn: Churn = field(default_factory=Churn)
    messiness: Messiness = field(default_factory=Messiness)

    def __post_init__(self) -> None:
        self.pop: Population = build_population(self.workers, self.start, self.seed, build_pools(self.seed))
        self.day: date = self.start
        self.changes: dict[date, list[dict]] = {self.start: []}

    def _rng(self, day: date, purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, day.toordinal(), purpose])

    def advance(self, to: date) -> None:
        """Apply the daily change sets up to and including `to`."""
        if to < self.day:
            raise ValueError(f"population is at {self.day}; cannot go back to {to}")
        while self.day < to:
            self.day += timedelta(days=1)
            self.changes[self.day] = apply_day(self.pop, self.day, self.churn, self._rng(self.day, _CHANGES))

    def render(self, day: date | None = None, fmt: str = "csv") -> RenderedDay:
        day = day or self.day
        self.advance(day)
        return render_day(self.pop, day, self.messiness, self._rng(day, _MESS), fmt)

    def write_day(self, out_dir: str | Path, day: date | None = None, fmt: str = "csv") -> DayFiles:
        """Write workers_, org_units_ and truth_ files for `day` (default: the current day)."""
        if fmt not in ("csv", "jsonl"):
            raise ValueError(f"unknown format {fmt!r} (csv or jsonl)")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rd = self.render(day, fmt)
        names = file_names(rd.day, fmt)
        rows = write_workers(out / names[0], rd, self.messiness)
        orgs = org_records(self.pop)
        write_org_units(out / names[1], orgs, self.messiness, fmt)
        changes = self.changes.get(rd.day, [])
        meta = {"snapshot_date": rd.day.isoformat(), "seed": self.seed, "format": fmt,
                "workers_file": names[0], "org_units_file": names[1], "fields": list(WORKER_COLUMNS),
                "header_lines": 1 if fmt == "csv" else 0, "bom": fmt == "csv" and self.messiness.bom,
                "crlf": fmt == "csv" and self.messiness.crlf, "persons": len(rd.lines), "rows": rows,
                "defects": rd.defects, "cosmetic": rd.cosmetic, "changes": changes,
                "org_units": [{k: (v or None) for k, v in rec.items()} for rec in orgs]}
        write_truth(out / names[2], rd, meta)
        return DayFiles(rd.day, out / names[0], out / names[1], out / names[2], len(rd.lines), rows,
                        len(orgs), len(rd.defects), len(changes))

    def source_records(self, day: date | None = None) -> dict[str, list[dict[str, str | None]]]:
        """The day's rows as the HTTP API serves them (source column names, "" -> None, duplicates kept)."""
        rd = self.render(day, "jsonl")
        cols = [(src, rd.source[f].tolist()) for f, src in WORKER_COLUMNS.items()]
        base = [{src: (vals[i] or None) for src, vals in cols} for i in range(len(rd.lines))]
        workers: list[dict[str, str | None]] = []
        prev = 0
        for r in rd.duplicates.tolist():
            workers += base[prev:r + 1] + [dict(base[r])]
            prev = r + 1
        workers += base[prev:]
        orgs = [{src: (rec[k] or None) for k, src in ORG_COLUMNS.items()} for rec in org_records(self.pop)]
        return {"workers": workers, "org_units": orgs}


def generate(out_dir: str | Path, workers: int = 10_000, days: int = 2, start: date = date(2026, 1, 5),
             seed: int = 42, fmt: str = "csv", messiness: Messiness | None = None, churn: Churn | None = None,
             progress: Progress | None = None) -> list[DayFiles]:
    """Write `days` consecutive daily snapshots starting at `start`; progress() is called 1 + days times."""
    t0 = time.perf_counter()
    hr = SyntheticHR(workers, start, seed, churn or Churn(), messiness or Messiness())
    if progress:
        progress(f"population of {workers:,} built in {time.perf_counter() - t0:.1f}s")
    out = []
    for i in range(days):
        day = start + timedelta(days=i)
        out.append(hr.write_day(out_dir, day, fmt))
        if progress:
            progress(f"{day.isoformat()}: {out[-1].rows:,} rows, {out[-1].defects} defects, "
                     f"{out[-1].changes} changes")
    return out
