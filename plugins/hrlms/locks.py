"""A cross-process file lock (one host).

Used where two processes may build or write the same files at once: Ralph's venv
(:mod:`hrlms.devenv.ralph`), the benchmarks' synthetic data (``bench/common.py``): the first builds, the
others wait and then find it built; and the Great Expectations file context under ``expectations/``
(:mod:`hrlms.quality.gate`), which two gates running at once on one host (parallel Airflow tasks, the
test suite's workers) would otherwise write at the same time.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on ``path`` for the ``with`` block.

    Creates ``path``'s parent directory if missing; the lock file itself is left in place (it is
    empty and reused). Blocks until no other process holds the lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
