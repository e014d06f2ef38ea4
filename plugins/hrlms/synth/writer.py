"""Write a rendered day: workers file (CSV or JSONL), org units file, truth JSONL.

Lines are built with str.join from pre-encoded columns and written in a few large writes (the csv
module writing row by row through a text encoder took ~14 s for 1M rows). Values are quoted per
RFC 4180 when needed, so any CSV reader reads them back. JSONL files carry null for empty values, like the HTTP API.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .messiness import Messiness
from .render import ORG_COLUMNS, WORKER_COLUMNS, RenderedDay

_enc = json.JSONEncoder(ensure_ascii=False).encode
_QUOTE_ONLY = frozenset({"person_id", "employee_number", "work_email", "username", "manager_person_id"})


def _encode_column(values: list[str], quote_only: bool) -> list[str]:
    """JSON-encode a column, "" -> null; ids/logins are ASCII without quotes or backslashes."""
    if quote_only:
        return ["null" if v == "" else f'"{v}"' for v in values]
    cache: dict[str, str] = {"": "null"}
    return [cache[v] if v in cache else cache.setdefault(v, _enc(v)) for v in values]


def _physical_order(n: int, duplicates: np.ndarray) -> Iterable[tuple[int, int]]:
    """(start, stop) slices of population rows; each duplicate row ends a slice and is repeated."""
    prev = 0
    for r in duplicates.tolist():
        yield prev, r + 1
        yield r, r + 1
        prev = r + 1
    yield prev, n


def _csv_column(values: list[str]) -> list[str]:
    """RFC 4180 quoting, only scanned per value when the column contains a special character at all."""
    if not any(c in "\x00".join(values) for c in ',"\r\n'):
        return values
    return [f'"{v.replace(chr(34), chr(34) * 2)}"' if any(c in v for c in ',"\r\n') else v for v in values]


CHUNK = 100_000   # rows rendered to text at a time: bounds peak memory at 1M rows


def _chunked(order: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    for a, b in order:
        for c in range(a, b, CHUNK):
            yield c, min(b, c + CHUNK)


def _write_lines(path: Path, header: str | None, render: Callable[[int, int], list[str]],
                 order: Iterable[tuple[int, int]], bom: bool, crlf: bool) -> None:
    """One write per chunk: per-row writes through a text encoder dominate otherwise."""
    eol = "\r\n" if crlf else "\n"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        if bom:
            fh.write("\ufeff")
        if header is not None:
            fh.write(header + eol)
        for a, b in _chunked(order):
            fh.write(eol.join(render(a, b)) + eol)


def write_workers(path: Path, rd: RenderedDay, m: Messiness) -> int:
    """Write the worker file; returns the number of data rows (persons + duplicate copies)."""
    fields = list(WORKER_COLUMNS)
    n = len(rd.lines)
    order = _physical_order(n, rd.duplicates)
    if rd.fmt == "csv":
        def render(a: int, b: int) -> list[str]:
            return [",".join(r) for r in zip(*(_csv_column(rd.source[f][a:b].tolist()) for f in fields))]

        _write_lines(path, ",".join(WORKER_COLUMNS.values()), render, order, m.bom, m.crlf)
    elif rd.fmt == "jsonl":
        keys = [f"{_enc(k)}:" for k in WORKER_COLUMNS.values()]

        def render(a: int, b: int) -> list[str]:
            enc = [[keys[i] + v for v in _encode_column(rd.source[f][a:b].tolist(), f in _QUOTE_ONLY)]
                   for i, f in enumerate(fields)]
            return ["{" + ",".join(r) + "}" for r in zip(*enc)]

        _write_lines(path, None, render, order, False, False)
    else:
        raise ValueError(f"unknown format {rd.fmt!r} (csv or jsonl)")
    return n + len(rd.duplicates)


def write_org_units(path: Path, records: list[dict[str, str]], m: Messiness, fmt: str) -> None:
    if fmt == "csv":
        with open(path, "w", encoding="utf-8-sig" if m.bom else "utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\r\n" if m.crlf else "\n")
            writer.writerow(list(ORG_COLUMNS.values()))
            writer.writerows([rec[k] for k in ORG_COLUMNS] for rec in records)
    else:
        with open(path, "w", encoding="utf-8", newline="") as fh:
            for rec in records:
                fh.write(_enc({src: rec[k] or None for k, src in ORG_COLUMNS.items()}) + "\n")


def write_truth(path: Path, rd: RenderedDay, meta: dict) -> None:
    """Line 1: meta (fields, defects, cosmetic, changes, org_units...); then one JSON array per person.

    Arrays (values in meta["fields"] order, then the physical line of the person's row) instead of
    objects halve the size at 1M persons; load_truth() turns them back into dicts.
    """
    line_text = rd.lines.astype(str)

    def render(a: int, b: int) -> list[str]:
        cols = [rd.truth[f][a:b].tolist() for f in WORKER_COLUMNS] + [line_text[a:b].tolist()]
        return ["[" + ",".join(r) + "]" for r in zip(*cols)]

    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(_enc({**meta, "fields": [*WORKER_COLUMNS, "line"]}) + "\n")
        for a, b in _chunked([(0, len(rd.lines))]):
            fh.write("\n".join(render(a, b)) + "\n")
