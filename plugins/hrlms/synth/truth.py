"""Read a truth_{YYYY-MM-DD}.jsonl file back (tests and the quality checks compare against it)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Truth:
    """Clean canonical values per person, plus what was injected and what changed that day."""

    meta: dict
    workers: dict[str, dict]          # person_id -> canonical record (+ "line", the physical line)

    @property
    def defects(self) -> list[dict]:
        return self.meta["defects"]

    @property
    def cosmetic(self) -> list[dict]:
        return self.meta["cosmetic"]

    @property
    def changes(self) -> list[dict]:
        return self.meta["changes"]

    @property
    def org_units(self) -> list[dict]:
        return self.meta["org_units"]


def load_truth(path: str | Path) -> Truth:
    with open(path, encoding="utf-8") as fh:
        meta = json.loads(fh.readline())
        workers = {}
        keys = meta["fields"]
        for line in fh:
            rec = dict(zip(keys, json.loads(line)))
            workers[rec["person_id"]] = rec
    return Truth(meta, workers)
