"""CLI: python -m hrlms.learning validate --rules FILE | preview --rules FILE [--rule ID] [--csv OUT].

validate: checks the rules file (errors name the rule and the field), touches nothing.
preview:  also shows who each rule would match in the warehouse (WAREHOUSE_URL) and what would change
          against the live assignments, before the file goes live. Nothing reaches the LMS.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hrlms.learning.rules import DEFAULT_RULES, RulesError, load_rules


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hrlms.learning", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check a rules file")
    v.add_argument("--rules", type=Path, default=DEFAULT_RULES)
    pr = sub.add_parser("preview", help="who would match, what would change")
    pr.add_argument("--rules", type=Path, default=DEFAULT_RULES)
    pr.add_argument("--rule", help="only this rule")
    pr.add_argument("--csv", type=Path, help="write every change and match to this CSV file")
    pr.add_argument("--limit", type=int, default=20, help="changes shown on screen")
    args = p.parse_args(argv)
    try:
        if args.cmd == "validate":
            loaded = load_rules(args.rules)
            rs = loaded.ruleset
            print(f"{args.rules}: valid — {len(rs.requirements)} requirements, {len(rs.rules)} rules, "
                  f"{len(rs.exemptions)} exemptions, on_unmatch={rs.settings.on_unmatch}")
            return 0
        from hrlms.learning.preview import preview_rules, print_preview, write_csv
        from hrlms.warehouse import db

        with db.connect() as conn:
            db.bootstrap(conn)
            result = preview_rules(conn, args.rules, rule=args.rule)
        print_preview(result, limit=args.limit)
        if args.csv:
            print(f"written: {write_csv(result, args.csv)}")
        return 0
    except (RulesError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
