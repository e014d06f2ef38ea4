"""Ralph LRS 5.1.0 (``fs`` backend) with two defects corrected, served by uvicorn on 127.0.0.1.

This file runs inside Ralph's own venv (see :mod:`hrlms.devenv.ralph`), so it imports only Ralph,
its dependencies and the standard library.  It is started as ``python -I ralph_app.py --port P``:
``-I`` keeps this folder off ``sys.path``, where ``ralph.py`` (the launcher) would shadow the
``ralph`` package.  Settings come from ``RALPH_*`` environment variables set by the launcher.

The two patches, applied to Ralph's classes when this module is imported (site-packages is never
edited, and the version is pinned in ``ralph-requirements.txt`` because both patches reach into
Ralph internals):

1. **Writes append.**  ``FSDataBackend.default_operation_type`` is ``CREATE``, and the statements
   router writes without an operation type, so the first POST creates ``fs_lrs.jsonl`` and every
   later POST fails with "already exists and overwrite is not allowed" (HTTP 500).  The LRS backend
   keeps all statements in that one file, so its default must be ``APPEND``.
2. **``verb`` / ``activity`` filters match.**  The router coerces both query parameters to
   ``ralph.models.xapi.base.common.IRI`` (a pydantic ``RootModel``) and the fs backend compares
   that object with the statement's ``verb.id`` / ``object.id`` strings, which is never equal:
   ``GET ?verb=…`` returned no statements at all.  The filter builders now receive ``str(iri)``.

Behaviour left as it is (clients must cope; :mod:`hrlms.learning.xapi` does):
``since``/``until`` compare the statement ``timestamp`` (not ``stored``; a statement without a
UTC offset in its timestamp makes such a query fail with 500); pages hold at most 100 statements
in file (= stored) order, ``ascending`` only reverses a page, and ``more`` is a relative URL with
``search_after=<last id>``; each page re-reads the whole file (fine for a dev LRS).
"""

from __future__ import annotations

import argparse
from typing import Any

from ralph.api import app
from ralph.backends.data.base import BaseOperationType
from ralph.backends.lrs.fs import FSLRSBackend
from ralph.conf import settings


def _as_str(value: Any) -> str | None:
    """``str()`` of an IRI object (or string); ``None`` stays ``None`` so the filter is skipped."""
    return None if value is None else str(value)


def _patch_fs_backend() -> None:
    """Apply patches 1 and 2 (see the module docstring) to ``FSLRSBackend``."""
    FSLRSBackend.default_operation_type = BaseOperationType.APPEND

    add_verb = FSLRSBackend._add_filter_by_verb
    add_activity = FSLRSBackend._add_filter_by_activity

    def add_filter_by_verb(filters: list, verb_id: Any) -> None:
        add_verb(filters, _as_str(verb_id))

    def add_filter_by_activity(filters: list, object_id: Any, related: bool | None) -> None:
        add_activity(filters, _as_str(object_id), related)

    FSLRSBackend._add_filter_by_verb = staticmethod(add_filter_by_verb)
    FSLRSBackend._add_filter_by_activity = staticmethod(add_filter_by_activity)


# The backend instances Ralph created on import look these class attributes up at each call.
_patch_fs_backend()


def main() -> None:
    """Serve the patched app (127.0.0.1 unless --host: the compose image listens inside its container
    network), logging with Ralph's own logging configuration."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_config=settings.LOGGING, log_level="info")


if __name__ == "__main__":
    main()
