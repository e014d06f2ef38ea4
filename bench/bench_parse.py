"""Benchmark f: parse time of each DAG file in dags/ (target < 0.5 s each).

Each measurement runs in a fresh interpreter, three ways:
- "dag-processor": what Airflow 3's dag-processor does per file — pre-import the airflow modules the
  file imports (`[dag_processor] parsing_pre_import_modules`, default on), then
  `DagBag(dag_folder=<file>, load_op_links=False)`; the figure is DagBag's own per-file duration
  (FileLoadStat, the number Airflow reports and times out on). Compared with the target.
- "DagBag, no pre-import": the same without the pre-import, so the file's own `airflow.sdk` imports
  are inside the figure (pre-import switched off, or the first file in a new process).
- "cold import": `runpy.run_path(<file>)` in an interpreter that has imported nothing of Airflow yet
  (what `python dags/x.py` costs; informational).
Sizes do not apply (--sizes is ignored).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import common

NAME = "parse"
TITLE = "f. DAG file parse time"
TARGET = "each DAG file parses in < 0.5 s (DagBag per-file duration as the dag-processor measures it)"
DAGS = common.REPO_ROOT / "dags"
LIMIT = 0.5
BINDING = "dag-processor (pre-import + DagBag)"

_DAGBAG = """
import importlib, json, sys
from airflow.dag_processing.dagbag import DagBag
if sys.argv[2] == "pre-import":
    from airflow.utils.file import iter_airflow_imports
    for module in iter_airflow_imports(sys.argv[1]):
        importlib.import_module(module)
bag = DagBag(dag_folder=sys.argv[1], load_op_links=False)
stat = bag.dagbag_stats[0]
print(json.dumps({"seconds": stat.duration.total_seconds(), "dags": stat.dag_num, "tasks": stat.task_num,
                  "errors": len(bag.import_errors)}))
"""
_COLD = """
import json, runpy, sys, time
t = time.perf_counter()
runpy.run_path(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t}))
"""
METHODS = {BINDING: (_DAGBAG, "pre-import"), "DagBag, no pre-import": (_DAGBAG, "-"),
           "cold import (nothing of Airflow loaded)": (_COLD, "-")}


def measure(code: str, arg: str, path: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, str(path), arg], cwd=common.REPO_ROOT, capture_output=True,
                          text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise common.BenchError(f"parsing {path.name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args("python -m bench.bench_parse", __doc__.split("\n")[0], argv)
    rec = common.Recorder(args, NAME, TITLE, TARGET)
    rec.doc["meta"]["sizes"] = []
    rec.note("Each measurement in a fresh interpreter (no .pyc of the DAG file is reused: run_path compiles it).")
    files = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
    for path in files:
        runs: dict[str, list[float]] = {m: [] for m in METHODS}
        info: dict = {}
        before = common.loadavg()
        for _ in range(args.repeats):
            for method, (code, arg) in METHODS.items():
                res = measure(code, arg, path)
                runs[method].append(res["seconds"])
                if "dags" in res:
                    info = res
        rec.run_load(path.name, before, common.loadavg())
        if info.get("errors"):
            rec.note(f"{path.name}: DagBag reported {info['errors']} import error(s)")
        for method, values in runs.items():
            rec.add_row(common.row(None, method, values, label=path.name, dags=info.get("dags"),
                                   tasks=info.get("tasks")))
        med = common.median(runs[BINDING])
        rec.check(f"parse {path.name}", "< 0.5 s", round(med, 3), "s", med < LIMIT and not info.get("errors"))
        common.say(f"[parse] {path.name}: " + ", ".join(f"{m.split(' (')[0]} {common.median(v):.3f}s"
                                                       for m, v in runs.items()))
        rec.save()
    path = rec.save(final=True)
    common.say(f"[parse] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
