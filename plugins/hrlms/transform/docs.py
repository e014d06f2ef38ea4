"""dbt docs of the project (`make dbt-docs`): ``python -m hrlms.transform.docs [--target-path DIR] [--serve PORT]``.

Generate: needs a warehouse (WAREHOUSE_URL: `make dbt-docs` runs it inside ``python -m hrlms.devenv run``).
On a warehouse where dbt has built nothing yet (the throwaway one) the project is first built empty
(``dbt build --empty``, no tests: every relation with its columns and no rows, as tests/dbt does), so the
catalog has every model's columns and types; a warehouse that already has the models is only read. Then
``dbt docs generate --static``: index.html + manifest.json + catalog.json, and static_index.html, one file
that opens without a server. Lineage: every source, model, snapshot and exposure of the manifest.

Serve: the generated folder over HTTP on 127.0.0.1 only (no warehouse needed any more).
"""
from __future__ import annotations

import argparse
import functools
import http.server
import sys
from datetime import datetime, timezone
from pathlib import Path

from hrlms.settings import REPO_ROOT

DEFAULT_TARGET = REPO_ROOT / ".local" / "dbt-docs"
DBT_SCHEMAS = ("staging", "intermediate", "marts", "snapshots")


def generate(target_path: Path = DEFAULT_TARGET) -> Path:
    """Build the project empty if the warehouse has none of it, then `dbt docs generate`. Returns the folder."""
    target_path = target_path.resolve()
    from hrlms.transform import dbt
    from hrlms.warehouse import db

    with db.connect() as conn:
        db.bootstrap(conn)
        built = conn.execute("select count(*) from information_schema.tables where table_schema = any(%s)",
                             (list(DBT_SCHEMAS),)).fetchone()[0]
    # The run parameters only matter for a build; the empty one reads no rows.
    run = {"snapshot_id": -1, "org_snapshot_id": -1, "logical_date": datetime.now(timezone.utc)}
    if not built:
        res = dbt.run_dbt(["build", "--empty", "--exclude-resource-type", "test", "unit_test"], **run,
                          target_path=str(target_path))
        if not res.success:
            raise dbt.DbtError(f"dbt build --empty failed: {res.failures}")
    res = dbt.run_dbt(["docs", "generate", "--static"], **run, target_path=str(target_path))
    if not res.success:
        raise dbt.DbtError(f"dbt docs generate failed: {res.failures}")
    return target_path


def serve(target_path: Path, port: int) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(target_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
        print(f"dbt docs: http://127.0.0.1:{port}/  (Ctrl-C stops)", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hrlms.transform.docs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target-path", type=Path, default=DEFAULT_TARGET)
    parser.add_argument("--serve", type=int, metavar="PORT",
                        help="serve an already generated folder on 127.0.0.1:PORT instead of generating")
    args = parser.parse_args(argv)
    args.target_path = args.target_path.resolve()   # dbt reads a relative one from the project dir
    if args.serve:
        if not (args.target_path / "index.html").is_file():
            print(f"no docs in {args.target_path}: generate them first", file=sys.stderr)
            return 1
        serve(args.target_path, args.serve)
        return 0
    out = generate(args.target_path)
    print(f"dbt docs generated in {out} (static_index.html opens without a server)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
