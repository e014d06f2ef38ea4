"""Seconds per step of a stage, for its detail in audit.stage_runs (the change set's and the plan's)."""
from __future__ import annotations

import time


class StepTimes(dict[str, float]):
    """A dict step -> seconds: `mark(step)` records the time since the last mark (or since creation)."""

    def __init__(self) -> None:
        super().__init__()
        self._last = time.perf_counter()

    def mark(self, step: str) -> None:
        now = time.perf_counter()
        self[step] = round(now - self._last, 3)
        self._last = now
