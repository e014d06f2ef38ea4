"""CLI: python -m hrlms.synth generate --out DIR ... | serve --dir DIR [--port 8080 --token T]."""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from datetime import date

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .changes import Churn
from .generator import generate
from .messiness import COSMETIC_KINDS, DEFECT_KINDS, Messiness


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hrlms.synth", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write daily workers_/org_units_/truth_ files")
    g.add_argument("--out", required=True, help="output folder (the landing folder)")
    g.add_argument("--workers", type=int, default=10_000)
    g.add_argument("--days", type=int, default=2)
    g.add_argument("--start", type=date.fromisoformat, default=date(2026, 1, 5), help="YYYY-MM-DD")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    g.add_argument("--no-bom", action="store_true", help="plain UTF-8 without BOM")
    g.add_argument("--no-crlf", action="store_true", help="LF line endings")
    g.add_argument("--churn", type=float, default=Churn.total, help="share of rows changed per day")
    g.add_argument("--messiness", type=float, help="set every defect and cosmetic rate to this value")
    g.add_argument("--clean", action="store_true", help="no defects, no noise")
    for kind in DEFECT_KINDS + COSMETIC_KINDS:
        g.add_argument(f"--{kind.replace('_', '-')}", type=float, dest=kind, help=f"rate of {kind}")
    s = sub.add_parser("serve", help="serve a folder of generated files as the paginated HR API")
    s.add_argument("--dir", required=True)
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--page-size", type=int, default=1000)
    s.add_argument("--token")
    return p


def _messiness(args: argparse.Namespace) -> Messiness:
    m = Messiness.clean() if args.clean else Messiness.scaled(args.messiness) if args.messiness is not None \
        else Messiness()
    rates = {k: getattr(args, k) for k in DEFECT_KINDS + COSMETIC_KINDS if getattr(args, k) is not None}
    return replace(m, **rates, bom=m.bom and not args.no_bom, crlf=m.crlf and not args.no_crlf)


def _generate(args: argparse.Namespace, console: Console) -> None:
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(f"building {args.workers:,} workers", total=args.days + 1)

        def step(msg: str) -> None:
            bar.console.print(msg)
            bar.update(task, advance=1, description="writing days")

        days = generate(args.out, workers=args.workers, days=args.days, start=args.start, seed=args.seed,
                        fmt=args.format, messiness=_messiness(args), churn=Churn(total=args.churn), progress=step)
    console.print(f"{len(days)} days, {days[-1].persons:,} persons, {sum(d.rows for d in days):,} rows, "
                  f"{sum(d.defects for d in days):,} defects, {sum(d.changes for d in days):,} changes "
                  f"-> {args.out} in {time.perf_counter() - t0:.1f}s")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    console = Console()
    if args.cmd == "generate":
        _generate(args, console)
    else:
        from .http_server import serve_pages
        with serve_pages(args.dir, page_size=args.page_size, token=args.token, port=args.port) as url:
            console.print(f"serving {args.dir} at {url}/api/workers?snapshot_date=YYYY-MM-DD (Ctrl-C to stop)")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass


if __name__ == "__main__":
    main()
