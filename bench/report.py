"""Build docs/benchmarks.md from the result files of the benchmarks (.local/bench/*.json).

Usage: python bench/report.py [--in .local/bench] [--out docs/benchmarks.md]
Renders whatever result files are present (see bench/common.py for their shape): the machine, the
versions, a summary of the figures against their targets, then each benchmark's rows (medians and
every run), checks, notes and profile, and bench/analysis/<name>.md when there is one (a person's
reading of the figures: what costs what and why).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STANDARD = ("size", "label", "metric", "median", "runs", "unit", "lower_bound")


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
        ram = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    os_name = platform.system()
    try:
        os_name = next(line.split("=", 1)[1].strip().strip('"') for line in Path("/etc/os-release").read_text()
                       .splitlines() if line.startswith("PRETTY_NAME="))
    except (OSError, StopIteration):
        pass
    return {"CPU": cpu, "cores (logical)": str(os.cpu_count()), "RAM": ram, "OS": os_name,
            "kernel": platform.release()}


def fmt(v, unit: str = "") -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if unit == "×":
            return f"{v:.2f}"
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) < 0.1 else f"{v:.2f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x, unit) for x in v)
    return str(v).replace("|", "\\|")


def table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> list[str]:
    right = right or set()
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def load_results(folder: Path) -> list[dict]:
    docs = []
    for path in sorted(folder.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(doc, dict) and "rows" in doc and "name" in doc:
            docs.append(doc)
    return sorted(docs, key=lambda d: d.get("title") or d["name"])


def rows_table(doc: dict) -> list[str]:
    rows = doc["rows"]
    has_size = any(r.get("size") is not None for r in rows)
    has_label = any(r.get("label") for r in rows)
    extra = []
    for r in rows:
        extra += [k for k in r if k not in STANDARD and k not in extra]
    headers = (["workers"] if has_size else []) + (["file"] if has_label else []) + \
        ["metric", "median", "unit", "runs"] + [k.replace("_", " ") for k in extra]
    body = []
    for r in rows:
        unit = r.get("unit", "")
        body.append(([fmt(r.get("size"))] if has_size else []) + ([fmt(r.get("label"))] if has_label else [])
                    + [fmt(r["metric"]), f"**{'≥ ' if r.get('lower_bound') else ''}{fmt(r['median'], unit)}**",
                       unit, fmt(r.get("runs"), unit)]
                    + [fmt(r.get(k)) for k in extra])
    right = {i for i, h in enumerate(headers) if h in ("workers", "median")}
    return table(headers, body, right)


def checks_rows(docs: list[dict]) -> list[list[str]]:
    out = []
    for d in docs:
        for c in d.get("checks", []):
            target = fmt(c["target"]) + (" (informational: the target is set for another size)"
                                         if c.get("binding") is False else "")
            out.append([d["title"].split(" ", 1)[0].rstrip("."), fmt(c["figure"]), target,
                        f"{'≥ ' if c.get('lower_bound') else ''}{fmt(c['value'], c.get('unit', ''))} "
                        f"{c.get('unit', '')}".strip(),
                        {True: "✅ met", False: "❌ not met"}.get(c["met"], "? unknown (lower bound)")])
    return out


def load_line(meta: dict) -> str:
    runs = meta.get("loadavg_runs") or []
    ones = [x[0] for r in runs for x in (r.get("before"), r.get("after")) if x]
    before, after = meta.get("loadavg_before") or [], meta.get("loadavg_after") or []
    s = f"load average (1/5/15 min) {fmt(before)} before, {fmt(after)} after"
    if ones:
        s += f"; 1-min load around the runs {min(ones):.1f}–{max(ones):.1f} (2 cores)"
    return s


def code_line(meta: dict) -> str:
    earlier = list(meta.get("earlier_runs") or [])
    older = {s for r in earlier for s in r.get("sizes") or []}
    runs = [{**meta, "sizes": [s for s in meta.get("sizes") or [] if s not in older]}, *earlier]
    if len({json.dumps(r.get("git"), sort_keys=True) for r in runs}) == 1:
        runs = runs[:1]
    parts = []
    for r in runs:
        g = r.get("git") or {}
        dirty = g.get("uncommitted_changes_in") or []
        what = f"commit {g.get('commit', '?')}"
        if dirty:
            shown = ", ".join(dirty[:6]) + (f" and {len(dirty) - 6} more" if len(dirty) > 6 else "")
            what += f" + uncommitted changes in {shown}"
        sizes = r.get("sizes")
        parts.append((f"sizes {fmt(sizes)}: " if sizes and len(runs) > 1 else "") + what)
    return "Code: " + "; ".join(parts) + "."


def ingest_profile(p: dict) -> list[str]:
    out = [f"**Profile: {p['title']}** (raw COPY of the same file: {fmt(p.get('raw_copy'))} s)", ""]
    out += table(["part of ingest_file", "median s", "runs"],
                 [[fmt(x["name"]), fmt(x["median"]), fmt(x["runs"])] for x in p["parts"]], {1})
    return out


def _slowest(invocations: list[dict], key: str, n: int) -> list[dict]:
    """The n slowest nodes over every dbt invocation (staging and the transform are separate builds)."""
    return sorted((x for inv in invocations for x in inv.get(key) or []), key=lambda x: -x["seconds"])[:n]


def transform_profile(p: dict) -> list[str]:
    out = [f"### Profile at {p['size']:,} workers", "",
           f"Repeat {p['repeat']} (the one with the median figure). Rows in the snapshot: {fmt(p.get('rows'))}, "
           f"quarantined: {fmt(p.get('quarantined'))}, marts: "
           + ", ".join(f"{k} {fmt(v)}" for k, v in (p.get("marts") or {}).items()) + ".", ""]
    runs = {r["stage"]: r["seconds"] for r in p.get("stage_runs", [])}
    out += [("Per stage — wall time of the task's pipeline call in a fresh interpreter vs `audit.stage_runs.seconds` "
             "(which starts after the module imports):"), ""]
    out += table(["stage", "wall s", "audit.stage_runs s"],
                 [[s, fmt(v), fmt(runs.get(s))] for s, v in p["stage_wall"].items()], {1, 2})
    if p.get("timed_out"):
        t = p["timed_out"]
        out += ["", f"**The {t['stage']} stage was stopped after {fmt(t['after_s'])} s.** Still running then:", ""]
        out += table(["running for s", "query"],
                     [[fmt(q["running_s"]), f"`{q['query'][:300]}`"] for q in t.get("running") or []], {0})
    gx = p["gx"]
    out += ["", (f"GX (gate stage, {fmt(gx['gate_wall'])} s wall; GX calls {fmt(gx['gx_calls_total'])} s, "
                 f"the rest {fmt(gx['outside_gx_calls'])} s — quarantine writes, views):"), ""]
    out += table(["GX call", "s"], [[fmt(k), fmt(v)] for k, v in gx["calls"].items()], {1})
    out += ["", ("dbt invocations (wall = the call; elapsed = dbt's own run_results elapsed_time; the difference is "
                 "import, parse and connection setup):"), ""]
    rows = []
    for d in p["dbt"]:
        types = ", ".join(f"{t} {v['count']} × = {fmt(v['seconds'])} s" for t, v in (d.get("by_type") or {}).items())
        rows.append([f"`dbt {d['command']}`", fmt(d["wall"]), fmt(d.get("elapsed")), fmt(d.get("outside_nodes")),
                     types])
    out += table(["invocation", "wall s", "elapsed s", "outside nodes s", "node time by type (summed over 4 threads)"],
                 rows, {1, 2, 3})
    models, tests = _slowest(p["dbt"], "slowest_models", 10), _slowest(p["dbt"], "slowest_tests", 5)
    if models:
        out += ["", "10 slowest dbt models (all `dbt build` invocations):", ""]
        out += table(["model", "type", "s", "rows"],
                     [[f"`{m['node']}`", m["type"], fmt(m["seconds"]), fmt(m.get("rows"))] for m in models], {2, 3})
    if tests:
        out += ["", "Slowest dbt data tests (all invocations): " + "; ".join(
            f"`{t['node']}` {fmt(t['seconds'])} s" for t in tests) + "."]
    return out


def render(docs: list[dict], source: Path) -> str:
    now = datetime.now(UTC)
    metas = [d["meta"] for d in docs]
    where = source.relative_to(REPO_ROOT) if source.is_relative_to(REPO_ROOT) else source
    first = min((m.get("started_at", "") for m in metas), default="?")
    last = max((m.get("finished_at") or m.get("updated_at") or "" for m in metas), default="?")
    lines = ["# Benchmarks", "",
             (f"Generated by `bench/report.py` on {now:%Y-%m-%d %H:%M} UTC from the result files in `{where}` "
              f"(runs between {first} and {last}). Benchmarks are not tests: they are run by hand (`make bench`) "
              "and report medians of repeated runs and every run. Targets: each benchmark's `TARGET` "
              "(`bench/bench_<name>.py`, listed in [architecture.md](architecture.md#performance-targets)) and issue 6."), ""]
    lines += ["## Reproduce", "", "```bash",
              "make bench                                   # all sizes (10k, 100k, 1M), 3 repeats",
              "make bench BENCH=ingest,transform,parse BENCH_SIZES=10000,100000 BENCH_REPEATS=3",
              "# one benchmark by hand, inside the throwaway services:",
              "PYTHONPATH=plugins .venv/bin/python -m hrlms.devenv run --airflow-db -- \\",
              "    .venv/bin/python -m bench.bench_transform --sizes 1000000 --repeats 1",
              ".venv/bin/python bench/report.py              # rebuild this file from .local/bench/*.json",
              "```", "",
              ("Synthetic data: `hrlms.synth`, seed 42, day 1 (2026-01-05) with its seeded defects and mess; "
               "generated once per size under `.local/bench/data/`. Every repeat runs against a fresh database on a "
               "throwaway PostgreSQL started by `hrlms.devenv` (fsync off: the data is disposable)."), ""]
    checks = checks_rows(docs)
    if checks:
        lines += ["## Figures against targets", ""]
        lines += table(["", "figure", "target", "measured (median)", ""], checks)
        lines.append("")
    lines += ["## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine().items()]
    lines += [("- **Shared machine**: other test runs used the same 2 cores while these figures were taken; the "
               "load average before and after each run is recorded (per benchmark below, per run in the JSON). "
               "Expect lower figures on an idle machine."), ""]
    commits = sorted({(m.get("git") or {}).get("commit", "?") for m in metas})
    lines += [(f"Code measured: commit(s) {', '.join(commits)} — each benchmark below names its commit and any "
               "uncommitted changes in the checkout at the time (others work in the same checkout)."), ""]
    lines += ["## Versions", ""]
    vers: dict[str, str] = {}
    for m in metas:
        for k, v in (m.get("versions") or {}).items():
            vers.setdefault(k, v)
    server = next((m["server"] for m in metas if m.get("server")), {})
    if server:
        vers = {"python": vers.pop("python", platform.python_version()),
                "PostgreSQL server": server.get("server_version", "?"), **vers}
    lines += table(["component", "version"], [[k, v] for k, v in vers.items()])
    # The server settings each benchmark ran with (they changed once: warehouse_settings() in the devenv)
    by_settings: dict[str, list[str]] = {}
    for d in docs:
        settings = {k: v for k, v in (d["meta"].get("server") or {}).items() if k != "server_version"}
        if settings:
            by_settings.setdefault(", ".join(f"{k} {v}" for k, v in settings.items()), []).append(d["name"])
    for text, names in by_settings.items():
        which = f" ({', '.join(names)})" if len(by_settings) > 1 else ""
        lines += ["", f"PostgreSQL settings{which}: {text}."]
    lines.append("")
    for d in docs:
        meta = d["meta"]
        lines += [f"## {d['title']}", "", f"Target: {d.get('target', '')}.", "",
                  ("Repeats per size: " + ", ".join(f"{int(k):,} × {v}" for k, v in sorted(
                      meta["repeats_by_size"].items(), key=lambda kv: int(kv[0]))) + "; "
                   if meta.get("repeats_by_size") else
                   f"Sizes {fmt(meta.get('sizes')) or '-'}, {meta.get('repeats')} repeat(s) each; ") +
                  f"{load_line(meta)}." + ("" if meta.get("complete") else " **Incomplete run** (stopped early)."), ""]
        lines += [code_line(meta), ""]
        lines += rows_table(d)
        if d.get("checks"):
            lines += ["", "Checks: " + "; ".join(
                f"{c['figure']}: {'≥ ' if c.get('lower_bound') else ''}{fmt(c['value'], c.get('unit', ''))} "
                f"{c.get('unit', '')} (target {c['target']}: "
                f"{ {True: 'met', False: 'not met'}.get(c['met'], 'unknown: a lower bound')})" for c in d["checks"])
                + "."]
        if d.get("notes"):
            lines += [""] + [f"- {n}" for n in d["notes"]]
        prof = d.get("profile")
        if prof:
            lines.append("")
            if d["name"] == "ingest" and "parts" in prof:
                lines += ingest_profile(prof)
            elif d["name"] == "transform" and "stage_wall" in prof:
                lines += transform_profile(prof)
            else:
                lines += ["Profile:", "", "```json", json.dumps(prof, indent=1)[:6000], "```"]
        analysis = REPO_ROOT / "bench" / "analysis" / f"{d['name']}.md"
        if analysis.is_file():     # hand-written reading of the figures (dated; update it with the figures)
            lines += ["", analysis.read_text().strip()]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/report.py", description=__doc__.split("\n")[0])
    ap.add_argument("--in", dest="src", type=Path, default=REPO_ROOT / ".local" / "bench")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)
    docs = load_results(args.src.resolve())
    if not docs:
        print(f"no benchmark results in {args.src}", file=sys.stderr)
        return 1
    args.out.write_text(render(docs, args.src.resolve()))
    print(f"wrote {args.out} ({len(docs)} benchmark(s): {', '.join(d['name'] for d in docs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
