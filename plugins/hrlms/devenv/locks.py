"""A cross-process file lock for local tooling (devenv services, benchmarks).

Used where two processes may build the same thing at once (Ralph's venv in
:mod:`hrlms.devenv.ralph`, the benchmarks' synthetic data in ``bench/common.py``): the first builds,
the others wait and then find it built.
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
