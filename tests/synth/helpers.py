"""Constants and readers shared by the synth tests (kept out of conftest so they can be imported)."""
from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

START = date(2026, 1, 5)
WORKERS = 1500


def read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(physical line, row) pairs; generated values never contain newlines, so line_num is exact."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        return [(reader.line_num, row) for row in reader]
