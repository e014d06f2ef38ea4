"""CLI: python -m hrlms.sync show-plan PLAN_ID — what a person reads before approving a held plan.

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
    args = p.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
