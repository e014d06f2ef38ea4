"""Data Docs stay flat: each gate renders only its own results and keeps the newest N per suite.

Every gate stores a few GX validation results; unpruned they pile up forever and the Data Docs rebuild
(which rendered every result of the run's name, and whose index reads every stored result) slowed
with them. dq.gate_runs keeps every snapshot's outcome, so old GX JSON can go.
"""
from __future__ import annotations

import re
import shutil
from datetime import date
from pathlib import Path
from urllib.parse import unquote

import pytest

from hrlms import pipeline, report
from hrlms.quality import gate

from ..sources.hrfiles import ORG_CSV, csv_text, worker

D1, D2 = date(2026, 1, 5), date(2026, 1, 6)
KEEP = 3
SUITES = ("org_units_batch", "workers_batch", "workers_rows")
LINK = re.compile(r"""(?:href=|src=|'_table_row_link_path':\s*)["']([^"'#?\\]+)""")
STATUS = re.compile(r"Status:</span>\s*<i[^>]*></i>\s*(Failed|Succeeded)")


@pytest.fixture
def gx_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the committed GX context with no stored results (the shared one holds other runs')."""
    target = tmp_path / "expectations"
    shutil.copytree(gate.GX_ROOT, target, ignore=lambda d, names: [
        n for n in names if Path(d).name == "uncommitted" and n in ("validations", "data_docs")])
    monkeypatch.setattr(gate, "GX_ROOT", target)
    monkeypatch.setattr(report, "GX_ROOT", target)
    monkeypatch.setenv("HRLMS_GX_KEEP_RESULTS", str(KEEP))
    # the tests gate one snapshot several times (a retried task): the build ledger would skip the repeats
    monkeypatch.setenv("HRLMS_REBUILD", "always")
    return target / "gx" / "uncommitted"


def _results(uncommitted: Path) -> dict[str, list[Path]]:
    """Stored results per suite, oldest first (path: suite/run name/run time/batch.json)."""
    out: dict[str, list[Path]] = {}
    for p in (uncommitted / "validations").rglob("*.json"):
        out.setdefault(p.relative_to(uncommitted / "validations").parts[0], []).append(p)
    return {s: sorted(ps, key=lambda p: p.parent.name) for s, ps in out.items()}


def _pages(uncommitted: Path) -> dict[str, int]:
    """Rendered validation pages (relative to the site) with their mtimes."""
    site = uncommitted / "data_docs" / "local_site"
    return {str(p.relative_to(site)): p.stat().st_mtime_ns for p in (site / "validations").rglob("*.html")}


def _page(site: Path, validations: Path, result: Path) -> Path:
    """The Data Docs page of a stored result (same suite/run name/run time/batch path)."""
    return (site / "validations" / result.relative_to(validations)).with_suffix(".html")


def _gate(day: date, times: int, landing: Path, rows: list[dict[str, str]]) -> dict[str, int]:
    (landing / f"workers_{day.isoformat()}.csv").write_text(csv_text(rows))
    (landing / f"org_units_{day.isoformat()}.csv").write_text(ORG_CSV)
    snaps = pipeline.ingest(f"test-{day}", day)
    pipeline.stage_models(f"test-{day}", day, snaps)
    for _ in range(times):     # gated again (a retried task) = the same run name, a new result
        pipeline.gate(f"test-{day}", day, snaps)
    return snaps


def test_gate_keeps_the_newest_results_per_suite_and_renders_only_its_own(fresh_db, landing, gx_root):
    good = [worker(i) for i in range(1, 11)]
    _gate(D1, KEEP + 1, landing, good)
    bad = good[:4] + [worker(5, Work_Email="not-an-email")] + good[5:]
    before_results, before_pages = _results(gx_root), _pages(gx_root)
    snaps = _gate(D2, 1, landing, bad)
    results, pages = _results(gx_root), _pages(gx_root)

    # (a) only KEEP results per suite, the newest: the oldest went, with their pages
    assert {s: len(ps) for s, ps in results.items()} == {s: KEEP for s in SUITES}
    for s in SUITES:
        assert results[s][:-1] == before_results[s][-(KEEP - 1):]
    assert len(pages) == KEEP * len(SUITES)
    validations, site = gx_root / "validations", gx_root / "data_docs" / "local_site"
    assert [d for base in (validations, site / "validations") for d in base.rglob("*")   # no emptied folders left
            if d.is_dir() and not any(d.iterdir())] == []

    # ... and the index lists exactly the kept pages, with no link to a missing file
    index = (site / "index.html").read_text()
    links = {unquote(m) for m in LINK.findall(index) if not re.match(r"[a-z]+:", m)}
    assert {link for link in links if link.startswith("validations/")} == set(pages)
    assert {link for link in links if link.startswith("expectations/")} == {f"expectations/{s}.html" for s in SUITES}
    assert [link for link in links if not (site / link).is_file()] == []

    # (b) the newest run's pages exist and show its result: the bad email fails workers_rows
    run_name = gate.run_name_for("workers", snaps["workers"])
    newest = {s: results[s][-1] for s in SUITES}
    html = _page(site, validations, newest["workers_rows"]).read_text()
    assert newest["workers_rows"].parts[-3] == run_name and run_name in html
    assert STATUS.findall(html) == ["Failed"] and "not-an-email" in html
    assert STATUS.findall(_page(site, validations, newest["workers_batch"]).read_text()) == ["Succeeded"]

    # (c) the last rebuild wrote only this run's pages (one per suite); the kept older ones were not rewritten
    written = {str(_page(site, validations, r).relative_to(site)) for r in newest.values()}
    assert set(pages) - set(before_pages) == written
    kept_older = set(pages) & set(before_pages)
    assert len(kept_older) == (KEEP - 1) * len(SUITES)
    assert {p: pages[p] for p in kept_older} == {p: before_pages[p] for p in kept_older}   # mtimes unchanged
    assert len(set(before_pages) - set(pages)) == len(SUITES)     # the oldest result per suite, dropped


def test_a_rerun_renders_only_the_newest_result_of_its_run_name(fresh_db, landing, gx_root, monkeypatch):
    """A run name recurs (the same snapshot gated again, snapshot ids restarting in a rebuilt warehouse):
    the earlier results under it were rendered when they ran and must not be rendered again."""
    monkeypatch.setenv("HRLMS_GX_KEEP_RESULTS", "0")       # 0 keeps every result
    snaps = _gate(D1, 2, landing, [worker(i) for i in range(1, 6)])
    before = _pages(gx_root)
    assert len(before) == 2 * len(SUITES)
    run_names = [gate.run_name_for(e, snaps[e]) for e in ("org_units", "workers")]
    rendered = gate.build_docs(gate.get_context(), run_names)
    newest = {s: max(p for p in before if p.split("/")[1] == s) for s in SUITES}
    assert sorted(k.expectation_suite_identifier.name for k in rendered) == sorted(SUITES)
    after = _pages(gx_root)
    assert set(after) == set(before)
    assert {p for p in after if after[p] != before[p]} == set(newest.values())


@pytest.mark.parametrize("raw", ["-1", "2.5", "many"])
def test_keep_setting_must_be_a_whole_number(monkeypatch, raw):
    monkeypatch.setenv("HRLMS_GX_KEEP_RESULTS", raw)
    with pytest.raises(ValueError, match="HRLMS_GX_KEEP_RESULTS"):
        gate.keep_results_from_env()
