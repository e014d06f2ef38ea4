"""YAML mappings from an HR export's columns to the canonical contract (docs/architecture.md, "Contracts").

A new export format needs a mapping file, not code. Errors name the mapping file and the key.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

WORKER_FIELDS = (
    "person_id", "employee_number", "first_name", "last_name", "preferred_name", "work_email",
    "username", "employment_status", "employment_type", "hire_date", "start_date",
    "termination_date", "last_day_of_work", "job_code", "job_title", "job_family", "org_unit_code",
    "manager_person_id", "location_code", "country", "time_zone",
    # optional: matrix/dotted-line managers (separated by ';') and a temporary manager with its dates
    "secondary_manager_person_ids", "temporary_manager_person_id", "temporary_manager_from",
    "temporary_manager_until",
)
ORG_UNIT_FIELDS = ("org_unit_code", "name", "parent_org_unit_code", "type", "status", "manager_person_id")
# LMS transcript exports (completions back from an LMS without xAPI): person by id or email; status is
# one of completed, passed, failed, in_progress, satisfied, waived (value_maps translate the LMS's words).
TRANSCRIPT_FIELDS = ("record_id", "person_id", "work_email", "requirement_id", "status", "completed_at", "score")
CANONICAL_FIELDS = {"workers": WORKER_FIELDS, "org_units": ORG_UNIT_FIELDS, "transcripts": TRANSCRIPT_FIELDS}
KEY_FIELD = {"workers": "person_id", "org_units": "org_unit_code", "transcripts": "requirement_id"}
FORMATS = ("csv", "jsonl")

# strftime directive -> Postgres to_date pattern (the subset HR exports use).
_PG_DATE = {"%Y": "YYYY", "%y": "YY", "%m": "MM", "%d": "DD", "%b": "Mon", "%B": "Month",
            "%j": "DDD", "%%": "%"}


class MappingError(ValueError):
    """A mapping file that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class EntityMapping:
    entity: str
    columns: dict[str, str]                 # canonical field -> source column
    required: tuple[str, ...]
    file_pattern: str
    format: str = "csv"
    delimiter: str = ","
    encoding: str = "utf-8"
    date_format: str = "%Y-%m-%d"
    value_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    http: dict[str, Any] = field(default_factory=dict)

    @property
    def pg_date_format(self) -> str:
        return strftime_to_pg(self.date_format)

    def hints(self) -> dict[str, Any]:
        """What staging needs to parse the landed text (stored with each snapshot)."""
        return {"date_format": self.pg_date_format, "value_maps": self.value_maps}


@dataclass(frozen=True)
class Mapping:
    name: str
    path: Path
    entities: dict[str, EntityMapping]

    def entity(self, entity: str) -> EntityMapping:
        if entity not in self.entities:
            raise MappingError(f"{self.path}: no mapping for entity '{entity}' (has {sorted(self.entities)})")
        return self.entities[entity]


def strftime_to_pg(fmt: str) -> str:
    out, i = [], 0
    while i < len(fmt):
        if fmt[i] == "%":
            token = fmt[i:i + 2]
            if token not in _PG_DATE:
                raise MappingError(f"date_format '{fmt}': directive '{token}' is not supported")
            out.append(_PG_DATE[token])
            i += 2
        else:
            out.append(fmt[i])
            i += 1
    return "".join(out)


def load_mapping(path: str | Path) -> Mapping:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MappingError(f"{path}: mapping file not found") from exc
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("entities"), dict):
        raise MappingError(f"{path}: expected a mapping with a top-level 'entities:' key")
    entities = {}
    for entity, spec in doc["entities"].items():
        entities[entity] = _entity(path, entity, spec)
    if "workers" not in entities:
        raise MappingError(f"{path}: entities.workers is required")
    return Mapping(name=str(doc.get("name") or path.stem), path=path, entities=entities)


def _entity(path: Path, entity: str, spec: Any) -> EntityMapping:
    where = f"{path}: entities.{entity}"
    if entity not in CANONICAL_FIELDS:
        raise MappingError(f"{where}: unknown entity (known: {sorted(CANONICAL_FIELDS)})")
    if not isinstance(spec, dict):
        raise MappingError(f"{where}: expected a mapping")
    allowed = {"columns", "required", "file_pattern", "format", "delimiter", "encoding",
               "date_format", "value_maps", "http"}
    unknown = set(spec) - allowed
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    columns = spec.get("columns")
    if not isinstance(columns, dict) or not columns:
        raise MappingError(f"{where}.columns: expected 'canonical_field: Source Column' pairs")
    canonical = CANONICAL_FIELDS[entity]
    for name, source in columns.items():
        if name not in canonical:
            raise MappingError(f"{where}.columns.{name}: not a canonical field (known: {', '.join(canonical)})")
        if not isinstance(source, str) or not source.strip():
            raise MappingError(f"{where}.columns.{name}: source column must be a non-empty string")
    sources = list(columns.values())
    dupes = {s for s in sources if sources.count(s) > 1}
    if dupes:
        raise MappingError(f"{where}.columns: source column(s) {sorted(dupes)} mapped twice")
    key = KEY_FIELD[entity]
    required = tuple(spec.get("required") or (key,))
    if key not in required:
        required = (key, *required)
    for name in required:
        if name not in columns:
            raise MappingError(f"{where}.required: '{name}' is required but not in columns")
    fmt = spec.get("format", "csv")
    if fmt not in FORMATS:
        raise MappingError(f"{where}.format: '{fmt}' is not one of {FORMATS}")
    delimiter = spec.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise MappingError(f"{where}.delimiter: must be one character")
    value_maps = spec.get("value_maps") or {}
    for name, vm in value_maps.items():
        if name not in canonical or not isinstance(vm, dict):
            raise MappingError(f"{where}.value_maps.{name}: expected a canonical field with 'source: canonical' pairs")
    date_format = spec.get("date_format", "%Y-%m-%d")
    try:
        strftime_to_pg(date_format)
    except MappingError as exc:
        raise MappingError(f"{where}.date_format: {exc}") from exc
    file_pattern = spec.get("file_pattern", f"{entity}_{{ds}}.csv")
    if not re.search(r"\{ds\}", file_pattern):
        raise MappingError(f"{where}.file_pattern: must contain {{ds}} (the logical date)")
    return EntityMapping(
        entity=entity, columns=dict(columns), required=required, file_pattern=file_pattern,
        format=fmt, delimiter=delimiter, encoding=str(spec.get("encoding", "utf-8")),
        date_format=date_format,
        value_maps={k: {str(a): str(b) for a, b in v.items()} for k, v in value_maps.items()},
        http=dict(spec.get("http") or {}),
    )
