"""Learning assignment rules as code: a YAML file, validated on load, stored in the warehouse.

The file (format in plugins/hrlms/rules/learning_rules.yaml) has requirements (course, learning path,
certification; optional recurrence), rules (which workers get a requirement, and when it is due) and
exemptions. Every error names the file, the rule (or requirement/exemption) and the field, e.g.
``rules.yaml: rule 'eu-gdpr' field 'match.countries': Input should be a valid list``.

Matching itself happens in SQL (dbt model int_learning_rule_matches) over the rows :func:`store_rules`
writes to ``learning.*``: one rule set is 'live' (what the pipeline assigns), another can be loaded as
'preview' to see what a changed file would do before it goes live (hrlms.learning.preview).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import psycopg
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_RULES = Path(__file__).resolve().parents[1] / "rules" / "learning_rules.yaml"
RULESETS = ("live", "preview")
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, the item and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Recurrence(_Strict):
    valid_months: int = Field(gt=0, le=120)        # a completion is valid this long
    window_days: int = Field(default=30, ge=0, le=365)  # renewal opens this many days before expiry


class Requirement(_Strict):
    id: str = Field(pattern=_ID)
    kind: Literal["course", "learning_path", "certification"]
    title: str = Field(min_length=1, max_length=200)
    recurrence: Recurrence | None = None


# The stored criteria columns, in Match's order (match_all = Match.all).
MATCH_COLUMNS = ("match_all", "job_codes", "job_families", "org_subtrees", "locations", "countries",
                 "employment_types", "people_manager", "min_tenure_days", "max_tenure_days", "hired_on_or_after",
                 "hired_before")


class Match(_Strict):
    """Criteria a worker must all meet (lists: any of the values). ``all: true`` matches everyone."""
    all: bool = False
    job_codes: list[str] | None = None
    job_families: list[str] | None = None
    org_subtrees: list[str] | None = None       # an org unit code and everything below it
    locations: list[str] | None = None
    countries: list[str] | None = None
    employment_types: list[str] | None = None
    people_manager: bool | None = None          # has at least one active direct report
    min_tenure_days: int | None = Field(default=None, ge=0)
    max_tenure_days: int | None = Field(default=None, ge=0)
    hired_on_or_after: date | None = None
    hired_before: date | None = None

    @field_validator("job_codes", "job_families", "org_subtrees", "locations", "countries", "employment_types")
    @classmethod
    def _non_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or any(not str(x).strip() for x in v)):
            raise ValueError("must be a non-empty list of non-empty values")
        return v

    @model_validator(mode="after")
    def _sane(self) -> Match:
        criteria = self.criteria()
        if self.all and criteria:
            raise ValueError("'all: true' cannot be combined with other criteria")
        if not self.all and not criteria:
            raise ValueError("no criteria: give at least one, or 'all: true' to match every worker")
        if self.min_tenure_days is not None and self.max_tenure_days is not None \
                and self.min_tenure_days > self.max_tenure_days:
            raise ValueError("min_tenure_days is greater than max_tenure_days")
        if self.hired_on_or_after and self.hired_before and self.hired_on_or_after >= self.hired_before:
            raise ValueError("hired_on_or_after must be before hired_before")
        return self

    def row(self) -> tuple[Any, ...]:
        """The criteria as stored (learning.rules / learning.role_rules columns MATCH_COLUMNS)."""
        return (self.all, *(getattr(self, c) for c in MATCH_COLUMNS[1:]))

    def criteria(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if k != "all" and v is not None}


class Due(_Strict):
    days: int = Field(ge=0, le=3650)
    after: Literal["start", "transfer", "assignment"] = "assignment"


class Rule(_Strict):
    id: str = Field(pattern=_ID)
    requirement: str
    description: str | None = None
    match: Match
    due: Due
    active_from: date | None = None     # the rule assigns from this (worker-local) date …
    active_until: date | None = None    # … through this one


class RoleRule(_Strict):
    """An LMS role (or entitlement) for the workers a rule matches, in the same rule language as the
    assignments: it is theirs while the rule matches and removed when it stops (hrlms.sync.outbound sends
    it once the LMS mapping maps the roles / entitlements column: docs/lms-mapping.md)."""
    id: str = Field(pattern=_ID)
    role: str = Field(pattern=r"^[^\s].{0,127}$")      # the value the LMS knows the role by
    attribute: Literal["roles", "entitlements"] = "roles"
    description: str | None = None
    match: Match
    active_from: date | None = None
    active_until: date | None = None


class Exemption(_Strict):
    """Applies to assignments matching every key given: a person (optionally for one requirement or
    rule), or a whole rule / requirement. ``until`` (inclusive) makes it expire."""
    person_id: str | None = None
    requirement: str | None = None
    rule: str | None = None
    reason: str = Field(min_length=3, max_length=500)
    since: date | None = None
    until: date | None = None

    @model_validator(mode="after")
    def _scoped(self) -> Exemption:
        if not (self.person_id or self.requirement or self.rule):
            raise ValueError("give at least one of person_id, requirement, rule")
        if self.since and self.until and self.since > self.until:
            raise ValueError("since is after until")
        return self


class Settings(_Strict):
    on_unmatch: Literal["stop_assigning", "keep_assigned"] = "stop_assigning"


class RuleSet(_Strict):
    version: Literal[1] = 1
    settings: Settings = Settings()
    requirements: list[Requirement] = Field(min_length=1)
    rules: list[Rule] = Field(default_factory=list)
    exemptions: list[Exemption] = Field(default_factory=list)
    roles: list[RoleRule] = Field(default_factory=list)


@dataclass(frozen=True)
class LoadedRules:
    path: Path
    checksum: str
    ruleset: RuleSet


def _where(doc: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """'rule 'x' field 'match.countries'' from a pydantic error location."""
    if len(loc) >= 2 and loc[0] in ("rules", "requirements", "exemptions", "roles") and isinstance(loc[1], int):
        items = doc.get(loc[0]) or []
        item = items[loc[1]] if loc[1] < len(items) else None
        kind = {"rules": "rule", "requirements": "requirement", "exemptions": "exemption", "roles": "role rule"}[loc[0]]
        ident = item.get("id") if isinstance(item, dict) and item.get("id") else f"#{loc[1] + 1}"
        field = ".".join(str(p) for p in loc[2:]) or "(item)"
        return f"{kind} '{ident}' field '{field}'"
    return f"field '{'.'.join(str(p) for p in loc) or '(top level)'}'"


def parse_rules(text: str, source: str | Path = "<rules>") -> RuleSet:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise RulesError(f"{source}: expected a mapping with 'requirements:' and 'rules:'")
    try:
        rs = RuleSet.model_validate(doc)
    except ValidationError as exc:
        msgs = [f"{source}: {_where(doc, tuple(e['loc']))}: {e['msg']}"
                + (" (YAML reads an unquoted yes/no/on/off as true/false: quote it)"
                   if isinstance(e.get("input"), bool) and e["type"] == "string_type" else "")
                for e in exc.errors()]
        raise RulesError("\n".join(msgs)) from None
    _cross_check(rs, source)
    return rs


def _dupes(ids: list[str]) -> list[str]:
    return sorted({i for i in ids if ids.count(i) > 1})


def _cross_check(rs: RuleSet, source: str | Path) -> None:
    errors = []
    req_ids = [r.id for r in rs.requirements]
    rule_ids = [r.id for r in rs.rules]
    for d in _dupes(req_ids):
        errors.append(f"requirement '{d}' field 'id': defined more than once")
    for d in _dupes(rule_ids):
        errors.append(f"rule '{d}' field 'id': defined more than once")
    for d in _dupes([r.id for r in rs.roles]):
        errors.append(f"role rule '{d}' field 'id': defined more than once")
    for r in rs.roles:
        if r.active_from and r.active_until and r.active_from > r.active_until:
            errors.append(f"role rule '{r.id}' field 'active_until': before active_from")
    for r in rs.rules:
        if r.requirement not in req_ids:
            errors.append(f"rule '{r.id}' field 'requirement': unknown requirement '{r.requirement}'")
        if r.active_from and r.active_until and r.active_from > r.active_until:
            errors.append(f"rule '{r.id}' field 'active_until': before active_from")
    for n, e in enumerate(rs.exemptions, 1):
        if e.requirement and e.requirement not in req_ids:
            errors.append(f"exemption #{n} field 'requirement': unknown requirement '{e.requirement}'")
        if e.rule and e.rule not in rule_ids:
            errors.append(f"exemption #{n} field 'rule': unknown rule '{e.rule}'")
    if errors:
        raise RulesError("\n".join(f"{source}: {m}" for m in errors))


def load_rules(path: str | Path | None = None) -> LoadedRules:
    path = Path(path or DEFAULT_RULES)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RulesError(f"{path}: rules file not found") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RulesError(f"{path}: not UTF-8 (byte {exc.start})") from None
    return LoadedRules(path, hashlib.sha256(raw).hexdigest(), parse_rules(text, path))


def store_rules(conn: psycopg.Connection, loaded: LoadedRules, *, ruleset: str = "live") -> bool:
    """Replace one rule set in ``learning.*`` in a single transaction. Returns False when the same
    file (checksum) is already stored as that rule set (nothing written)."""
    if ruleset not in RULESETS:
        raise ValueError(f"ruleset must be one of {RULESETS}")
    rs = loaded.ruleset
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('hrlms.learning_rules'))")
        row = conn.execute("select checksum from learning.rule_sets where ruleset = %s", (ruleset,)).fetchone()
        if row and row[0] == loaded.checksum:
            return False
        for table in ("exemptions", "rules", "requirements", "role_rules"):
            conn.execute(f"delete from learning.{table} where ruleset = %s", (ruleset,))
        conn.execute(
            """insert into learning.rule_sets (ruleset, source_path, checksum, on_unmatch) values (%s, %s, %s, %s)
               on conflict (ruleset) do update set source_path = excluded.source_path,
                   checksum = excluded.checksum, on_unmatch = excluded.on_unmatch, loaded_at = clock_timestamp()""",
            (ruleset, loaded.path.name, loaded.checksum, rs.settings.on_unmatch))
        with conn.cursor() as cur:
            cur.executemany(
                """insert into learning.requirements (ruleset, requirement_id, kind, title, valid_months, window_days)
                   values (%s, %s, %s, %s, %s, %s)""",
                [(ruleset, r.id, r.kind, r.title, r.recurrence.valid_months if r.recurrence else None,
                  r.recurrence.window_days if r.recurrence else None) for r in rs.requirements])
            criteria = ", ".join(MATCH_COLUMNS)
            marks = ", ".join(["%s"] * len(MATCH_COLUMNS))
            if rs.rules:
                cur.executemany(
                    f"""insert into learning.rules (ruleset, rule_id, requirement_id, description, {criteria},
                           due_days, due_after, active_from, active_until)
                       values (%s, %s, %s, %s, {marks}, %s, %s, %s, %s)""",
                    [(ruleset, r.id, r.requirement, r.description, *r.match.row(), r.due.days, r.due.after,
                      r.active_from, r.active_until) for r in rs.rules])
            if rs.roles:
                cur.executemany(
                    f"""insert into learning.role_rules (ruleset, rule_id, role, attribute, description, {criteria},
                           active_from, active_until)
                       values (%s, %s, %s, %s, %s, {marks}, %s, %s)""",
                    [(ruleset, r.id, r.role, r.attribute, r.description, *r.match.row(), r.active_from,
                      r.active_until) for r in rs.roles])
            if rs.exemptions:
                cur.executemany(
                    """insert into learning.exemptions (ruleset, exemption_no, person_id, requirement_id, rule_id,
                           reason, since, until) values (%s, %s, %s, %s, %s, %s, %s, %s)""",
                    [(ruleset, n, e.person_id, e.requirement, e.rule, e.reason, e.since, e.until)
                     for n, e in enumerate(rs.exemptions, 1)])
    return True
