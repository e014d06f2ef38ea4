"""Preview a rules file before it goes live: who each rule would match, and what would change.

The candidate file is validated and stored as the 'preview' rule set; the dbt view
int_learning_rule_matches evaluates it against the workers of the last run (no dbt run, nothing
reaches the LMS). The changes compare the preview's matches with the open live assignments:
``add`` = would be assigned, ``remove`` = would stop (unless the candidate says
``on_unmatch: keep_assigned``, then the person keeps it while active).

    python -m hrlms.learning preview --rules my_rules.yaml [--rule RULE_ID] [--csv out.csv]
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from hrlms.learning.export import inert
from hrlms.learning.rules import load_rules, store_rules


@dataclass
class Preview:
    rules_file: str
    as_of_date: str | None
    per_rule: list[tuple[str, str, int]] = field(default_factory=list)        # rule, requirement, people
    changes: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # action, req, person, name, org
    matches: list[tuple[str, str, str, str, str, str]] = field(default_factory=list)  # rule, req, person, name, org, job

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for action, *_ in self.changes:
            out[action] = out.get(action, 0) + 1
        return out


_MATCHES = """
select m.rule_id, m.requirement_id, m.person_id, w.first_name || ' ' || w.last_name, w.org_unit_name, w.job_title
from intermediate.int_learning_rule_matches m
join marts.workers w on w.person_id = m.person_id
where m.ruleset = 'preview' and (%(rule)s::text is null or m.rule_id = %(rule)s)
order by m.rule_id, m.person_id
"""

_CHANGES = """
with preview as (
    select distinct person_id, requirement_id from intermediate.int_learning_rule_matches
    where ruleset = 'preview' and (%(rule)s::text is null or rule_id = %(rule)s)
),
live as (
    select person_id, requirement_id from marts.learning_assignments
    where is_open and (%(rule)s::text is null
        or requirement_id = (select requirement_id from learning.rules where ruleset = 'preview' and rule_id = %(rule)s))
),
keep as (select on_unmatch = 'keep_assigned' as keep from learning.rule_sets where ruleset = 'preview'),
changes as (
    select 'add' as action, person_id, requirement_id from (select * from preview except select * from live) a
    union all
    select 'remove', person_id, requirement_id from (select * from live except select * from preview) r
    where not coalesce((select keep from keep), false)
)
select c.action, c.requirement_id, c.person_id, w.first_name || ' ' || w.last_name, w.org_unit_name
from changes c left join marts.workers w on w.person_id = c.person_id
order by c.action, c.requirement_id, c.person_id
"""


def preview_rules(conn: psycopg.Connection, rules_path: str | Path, *, rule: str | None = None) -> Preview:
    loaded = load_rules(rules_path)          # RulesError names the rule and field
    store_rules(conn, loaded, ruleset="preview")
    if conn.execute("select to_regclass('intermediate.int_learning_rule_matches')").fetchone()[0] is None:
        raise RuntimeError("no run has built the learning models yet: run the pipeline once, then preview")
    if rule and rule not in {r.id for r in loaded.ruleset.rules}:
        raise ValueError(f"{loaded.path.name}: no rule '{rule}'")
    as_of = conn.execute("select max(as_of_date)::text from marts.workers").fetchone()[0]
    out = Preview(loaded.path.name, as_of)
    params = {"rule": rule}
    out.matches = [tuple(r) for r in conn.execute(_MATCHES, params)]
    counts: dict[tuple[str, str], int] = {}
    for rid, req, *_ in out.matches:
        counts[rid, req] = counts.get((rid, req), 0) + 1
    out.per_rule = [(r.id, r.requirement, counts.get((r.id, r.requirement), 0))
                    for r in loaded.ruleset.rules if rule is None or r.id == rule]
    out.changes = [tuple(r) for r in conn.execute(_CHANGES, params)]
    return out


def write_csv(preview: Preview, path: Path) -> Path:
    """One row per change (add/remove) then one per match, spreadsheet-safe."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["kind", "rule_or_action", "requirement_id", "person_id", "name", "org_unit", "job_title"])
        for action, req, person, name, org in preview.changes:
            w.writerow([inert(v) for v in ("change", action, req, person, name, org, "")])
        for rid, req, person, name, org, job in preview.matches:
            w.writerow([inert(v) for v in ("match", rid, req, person, name, org, job)])
    os.replace(tmp, path)
    return path


def print_preview(preview: Preview, *, limit: int = 20) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"{preview.rules_file}: who each rule matches (workers as of {preview.as_of_date})")
    for col in ("rule", "requirement", "people"):
        t.add_column(col, justify="right" if col == "people" else "left")
    for rid, req, n in preview.per_rule:
        t.add_row(rid, req, f"{n:,}")
    console.print(t)
    counts = preview.counts()
    c = Table(title=f"changes against the live assignments: {counts.get('add', 0):,} add, "
                    f"{counts.get('remove', 0):,} remove (first {limit})")
    for col in ("action", "requirement", "person", "name", "org unit"):
        c.add_column(col)
    for row in preview.changes[:limit]:
        c.add_row(*(str(v or "") for v in row))
    console.print(c)
