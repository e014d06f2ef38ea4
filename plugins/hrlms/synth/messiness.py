"""Defects and cosmetic noise injected when a day's file is written, and recorded for the tests.

Each defective person gets exactly one defect (defect sets are disjoint), unit managers are never
defective (so no report's manager row gets quarantined), and duplicate rows are byte-identical,
so the only batch-level conflict in a generated file is one a test creates on purpose.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import date

import numpy as np

DEFECT_KINDS: tuple[str, ...] = ("bad_email", "bad_date", "termination_before_hire", "unknown_status",
                                 "duplicate_row", "missing_manager", "unknown_org_code")
ROW_ERRORS: frozenset[str] = frozenset({"bad_email", "bad_date", "termination_before_hire", "unknown_status"})
COSMETIC_KINDS: tuple[str, ...] = ("whitespace", "case")
BAD_DATES: tuple[str, ...] = ("13/45/2024", "notadate", "02/30/2025", "2025-13-01", "00/00/0000")
UNKNOWN_STATUS = "X"


@dataclass(frozen=True)
class Messiness:
    """Per-kind share of persons affected in a day's file (at least one when > 0), and file options."""

    bad_email: float = 0.002
    bad_date: float = 0.002
    termination_before_hire: float = 0.002
    unknown_status: float = 0.002
    duplicate_row: float = 0.002
    missing_manager: float = 0.002
    unknown_org_code: float = 0.002
    whitespace: float = 0.005   # fixable: "  John ", not an error
    case: float = 0.005         # fixable: "JOHN.SMITH@EXAMPLE.COM", not an error
    bom: bool = True            # UTF-8 BOM on CSV files
    crlf: bool = True           # CRLF line endings on CSV files

    @classmethod
    def scaled(cls, rate: float, **overrides: float | bool) -> "Messiness":
        """Every defect and cosmetic rate set to `rate` (the CLI's --messiness)."""
        rates = {k: rate for k in DEFECT_KINDS + COSMETIC_KINDS}
        return replace(cls(), **{**rates, **overrides})

    @classmethod
    def clean(cls, **overrides: float | bool) -> "Messiness":
        """No defects, no noise, plain UTF-8 with LF."""
        off = {f.name: (False if f.type in ("bool", bool) else 0.0) for f in fields(cls)}
        return replace(cls(), **{**off, **overrides})

    def count(self, kind: str, rows: int) -> int:
        rate = getattr(self, kind)
        return 0 if rate <= 0 else max(1, round(rate * rows))


@dataclass
class Injection:
    """What was injected, by population row (line numbers are assigned when the file layout is known)."""

    defects: list[tuple[int, str, str]]    # (row, defect, canonical field)
    cosmetic: list[tuple[int, str, str]]   # (row, kind, canonical field)
    duplicates: np.ndarray                 # rows written twice (sorted)


def inject(cols: dict[str, np.ndarray], *, rows_with_term: np.ndarray, hire: np.ndarray, heads: np.ndarray,
           unknown_org: list[str], m: Messiness, rng: np.random.Generator) -> Injection:
    """Mutate the source-format columns (object arrays keyed by canonical field) in place."""
    n = len(heads)
    order = rng.permutation(np.nonzero(~heads)[0])
    used = np.zeros(n, dtype=bool)

    def take(kind: str, extra: np.ndarray | None = None) -> list[int]:
        cand = order[~used[order]] if extra is None else order[~used[order] & extra[order]]
        picked = cand[: m.count(kind, n)]
        used[picked] = True
        return picked.tolist()

    defects: list[tuple[int, str, str]] = []
    cosmetic: list[tuple[int, str, str]] = []
    email, login = cols["work_email"], cols["username"]
    for r in take("bad_email"):
        u = login[r]
        email[r] = (f"{u}@", "no-at-sign", f"{u}@@example.com", f"{u}example.com")[int(rng.integers(4))]
        defects.append((r, "bad_email", "work_email"))
    for r in take("bad_date"):
        roll = rng.random()
        field = "termination_date" if roll < 0.2 and cols["termination_date"][r] else \
            "start_date" if roll < 0.5 else "hire_date"
        cols[field][r] = BAD_DATES[int(rng.integers(len(BAD_DATES)))]
        defects.append((r, "bad_date", field))
    for r in take("termination_before_hire", rows_with_term):
        when = date.fromordinal(int(hire[r]) - int(rng.integers(1, 366))).strftime("%m/%d/%Y")
        cols["termination_date"][r] = cols["last_day_of_work"][r] = when
        defects.append((r, "termination_before_hire", "termination_date"))
    for r in take("unknown_status"):
        cols["employment_status"][r] = UNKNOWN_STATUS
        defects.append((r, "unknown_status", "employment_status"))
    for r in take("missing_manager"):
        cols["manager_person_id"][r] = ""
        defects.append((r, "missing_manager", "manager_person_id"))
    for i, r in enumerate(take("unknown_org_code")):
        cols["org_unit_code"][r] = unknown_org[i % len(unknown_org)]
        defects.append((r, "unknown_org_code", "org_unit_code"))
    dups = take("duplicate_row")
    defects += [(r, "duplicate_row", "person_id") for r in dups]
    for r in take("whitespace"):
        field = ("first_name", "last_name", "job_title")[int(rng.integers(3))]
        pad = (("  ", " "), (" ", ""), ("", "  "))[int(rng.integers(3))]
        cols[field][r] = f"{pad[0]}{cols[field][r]}{pad[1]}"
        cosmetic.append((r, "whitespace", field))
    for r in take("case"):
        field = ("work_email", "username")[int(rng.integers(2))]
        cols[field][r] = cols[field][r].upper()
        cosmetic.append((r, "case", field))
    return Injection(defects, cosmetic, np.asarray(sorted(dups), dtype=np.int64))
