"""CLI: python -m hrlms.sync show-plan PLAN_ID — what a person reads before approving a held plan;
python -m hrlms.sync preview-mapping [FILE] — what an outbound mapping would send before it goes live.

Prints the plan's status, why it is held, the breaker figures, counts per op type and changed
attribute, the attributes changed from one non-empty value to another (counts, and for those that
tripped the breaker samples: person, old value → new value), and sample records per op type (from
sync.plans.review). Approve or reject by triggering
hrlms_provision with {"approve_plan": PLAN_ID} / {"reject_plan": PLAN_ID} (docs/operations.md).
"""
from __future__ import annotations

import argparse
import json
import sys

from hrlms.sync.breaker import describe_changes
from hrlms.warehouse import db


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hrlms.sync", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    show = sub.add_parser("show-plan", help="review a plan")
    show.add_argument("plan_id", type=int)
    preview = sub.add_parser("preview-mapping", help="accounts each attribute of an LMS mapping would touch")
    preview.add_argument("file", nargs="?", help="the mapping to preview (default: HRLMS_LMS_MAPPING)")
    args = p.parse_args(argv)
    if args.cmd == "preview-mapping":
        return _preview(args.file)
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    with db.connect() as conn:
        db.bootstrap(conn)
        row = conn.execute("select status, logical_date, counts, held_reason, review from sync.plans "
                           "where plan_id = %s", (args.plan_id,)).fetchone()
        if row is None:
            print(f"error: plan {args.plan_id} does not exist", file=sys.stderr)
            return 2
        status, day, counts, reason, review = row
        decisions = conn.execute("select decision, decided_by, decided_at from sync.plan_decisions "
                                 "where plan_id = %s order by decided_at", (args.plan_id,)).fetchall()
    console = Console()
    console.print(f"[bold]plan {args.plan_id}[/] for {day}: [bold]{status}[/]" + (f" — {reason}" if reason else ""))
    t = Table(title="operations")
    t.add_column("op type")
    t.add_column("count", justify="right")
    for op, n in sorted((counts.get("ops") or {}).items()):
        t.add_row(op, f"{n:,}")
    console.print(t)
    if counts.get("attributes"):
        console.print("changed attributes: " + ", ".join(f"{k} {v}" for k, v in counts["attributes"].items()))
    breaker_review = (review or {}).get("breaker", {})
    console.print("breaker: " + json.dumps({k: v for k, v in breaker_review.items() if k != "changed"}, default=str))
    for row in describe_changes(breaker_review):
        # values from HR are printed as they are (escaped: a "[b]" in a title is not rich markup)
        console.print(f"[bold]{row['attribute']}[/] changed {row['changed']:,} of {row['base']:,} accounts that have one"
                      + (" [bold red](held)[/]" if row["held"] == "yes" else "")
                      + (f" — e.g. {escape(row['samples'])}" if row["samples"] else ""), highlight=False, soft_wrap=True)
    for op, rows in ((review or {}).get("samples") or {}).items():
        console.print(f"[bold]{op}[/] (first {len(rows)}): "
                      + escape("; ".join(json.dumps(r, default=str) for r in rows)))
    for d, by, at in decisions:
        console.print(f"decision: {d} by {by} at {at}")
    return 0


def _preview(file: str | None) -> int:
    from rich.console import Console
    from rich.table import Table

    from hrlms.pipeline import read_lms_schemas
    from hrlms.sync.outbound import MappingError
    from hrlms.sync.plan import preview_mapping

    console = Console()
    with db.connect() as conn:
        db.bootstrap(conn)
        read_lms_schemas(conn)
        try:
            got = preview_mapping(conn, file)
        except (MappingError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    t = Table(title=f"{got['mapping']} (checksum {got['checksum']}): accounts each attribute would update")
    t.add_column("attribute")
    t.add_column("accounts", justify="right")
    for attr, n in got["attributes"].items():
        t.add_row(attr, f"{n:,}")
    console.print(t)
    console.print("ops: " + (", ".join(f"{k} {v:,}" for k, v in sorted(got["ops"].items())) or "none"))
    if got["held"]:
        console.print("[bold red]the breaker would hold this plan:[/] " + "; ".join(got["held"]), highlight=False)
    console.print("Nothing was sent or stored. Set HRLMS_LMS_MAPPING to the file to make it live: the next plan "
                  "compares every account.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
