"""What the LMS receives: the outbound attribute mapping (docs/lms-mapping.md).

A YAML file (``HRLMS_LMS_MAPPING``, default ``hrlms/mappings/lms_outbound.yaml``) lists, per SCIM attribute
path, the warehouse column of ``marts.lms_desired_users`` or the small expression it comes from. Every
user attribute hrlms sends is listed there; the code names none. hrlms owns ``externalId`` (the person id),
``active`` (the account's lifecycle) and the enterprise ``manager`` (resolved to the manager's LMS id at
apply time): a mapping may not map them.

Paths (RFC 7644 §3.5.2 attribute paths, the subset that names one value):
``title`` · ``name.givenName`` (sub-attribute of a complex attribute) · ``emails[type eq "work"].value``
(one typed value of a multi-valued attribute; all mapped values of ``emails`` are sent together) ·
``urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`` and any extension schema the LMS
declares for its User resource type (``urn:example:lms:2.0:User:costCenterName``).

Expressions (``expr:``; where an expression is expected a plain string names a column):
``{column: c}`` · ``{literal: v}`` · ``{concat: [e, …]}`` · ``{lower: e}`` / ``{upper: e}`` / ``{trim: e}`` ·
``{default: [e, …]}`` (the first non-empty) · ``{lookup: e, table: {hr value: LMS value}, default: v}`` (a plain
string default is a literal) · ``{date_format: e, format: "%d.%m.%Y"}`` (strftime directives of the HR
mapping). They compile to SQL over the mart's row (column names checked, literals quoted): the values are
computed set-based at plan time, for the accounts the plan compares.

Checked before any write (``check``): against the LMS's own ``/Schemas`` and ``/ResourceTypes`` (read by
the plan stage: ``refresh_lms_schemas``, stored in ``sync.lms_schemas``; before the first read, against
RFC 7643's User and enterprise extension as scim2-models describes them). An unknown attribute or
sub-attribute, an extension the LMS's User does not declare, a read-only attribute, a multi-valued
attribute without ``[type eq "…"]``, a type that does not fit (a text column into a boolean or dateTime,
…), a required attribute left unmapped, a bad expression or an unknown column: ``MappingError`` naming the
file and line of every problem; the plan is not made, nothing is sent.

Values travel as JSON: ``attrs`` (name -> value, empty values left out) in each desired row of a plan, in
the ops' payloads (with the account's key columns, not the mart's other columns) and in
``sync.applied_users.attrs`` (what we sent); the plan compares them per name where they differ as a whole.
A date or timestamp going to a ``dateTime`` attribute is sent as ISO 8601 in UTC (a date at midnight).
Payloads are plain dicts: scim2-models' static User model refuses paths of extensions it does not know,
and the mapping has been checked against the LMS's schemas, which is the stricter test.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from scim2_models import Context, EnterpriseUser, ResourceType, Schema, User

from hrlms.sources.mapping import MappingError as _HrMappingError
from hrlms.sources.mapping import strftime_to_pg

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
DEFAULT_LMS_MAPPING = Path(__file__).resolve().parents[1] / "mappings" / "lms_outbound.yaml"
SOURCE_RELATION = "marts.lms_desired_users"
# hrlms's own: the account's key, lifecycle and manager (resolved to an LMS id), and what the LMS derives
OWNED = {"id", "externalid", "meta", "schemas", "active", "groups", "password", f"{ENTERPRISE}:manager".lower()}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_PATH = re.compile(r'^(?:(?P<urn>urn:[A-Za-z0-9:._-]+):)?(?P<attr>[A-Za-z][\w$-]*)'
                   r'(?:\[type eq "(?P<type>[^"\\]+)"\])?(?:\.(?P<sub>[A-Za-z][\w$-]*))?$')
_OPS = ("column", "literal", "concat", "lower", "upper", "trim", "default", "lookup", "date_format")
_PG_TYPES = {  # type OID -> SCIM types a value of it may go to
    25: {"string", "reference", "binary"}, 1043: {"string", "reference", "binary"},
    1042: {"string", "reference", "binary"}, 16: {"boolean"},
    20: {"integer", "decimal"}, 21: {"integer", "decimal"}, 23: {"integer", "decimal"},
    700: {"decimal"}, 701: {"decimal"}, 1700: {"decimal"},
    1082: {"dateTime"}, 1114: {"dateTime"}, 1184: {"dateTime"},
}
_PG_TEXT_ARRAYS = {1009, 1015}     # text[] / varchar[]: several typed values (roles, entitlements)
_PG_NAMES = {25: "text", 1043: "varchar", 1042: "char", 16: "boolean", 20: "bigint", 21: "smallint",
             23: "integer", 700: "real", 701: "double precision", 1700: "numeric", 1082: "date",
             1114: "timestamp", 1184: "timestamptz", 1009: "text[]", 1015: "varchar[]"}


def valid_name(name: str) -> str:
    """An attribute name safe to put into SQL (the mapping's names are checked when it is loaded)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"unknown attribute {name!r}")
    return name


class MappingError(_HrMappingError):
    """An outbound mapping that cannot be used; the message names the file and line of each problem."""


@dataclass(frozen=True)
class Target:
    """A parsed attribute path."""
    schema: str                 # CORE or the extension's URN
    attr: str                   # the (top-level) attribute
    type: str | None = None     # [type eq "…"] of a multi-valued attribute
    sub: str | None = None      # its sub-attribute

    @property
    def container(self) -> str | None:
        """The JSON key the attribute lives under in a resource (None: the resource itself)."""
        return None if self.schema == CORE else self.schema

    @property
    def whole(self) -> str:
        """The path of the whole top-level attribute (what a PATCH of a multi-valued one replaces)."""
        return self.attr if self.schema == CORE else f"{self.schema}:{self.attr}"


def parse_path(path: str) -> Target | None:
    m = _PATH.match(path.strip()) if isinstance(path, str) else None
    if not m:
        return None
    if m["type"] is not None and m["sub"] is None:
        return None
    return Target(m["urn"] or CORE, m["attr"], m["type"], m["sub"])


@dataclass(frozen=True)
class Attribute:
    name: str
    path: str
    target: Target
    source: Any                 # the column name (from:) or the expression (expr:)
    line: int


@dataclass(frozen=True)
class OutboundMapping:
    file: Path
    name: str
    attributes: tuple[Attribute, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    @property
    def checksum(self) -> str:
        canon = [(a.name, a.path, a.source) for a in self.attributes]
        return hashlib.sha256(json.dumps(canon, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def where(self, a: Attribute) -> str:
        return f"{self.file}, line {a.line} ({a.name!r}, path {a.path!r})"


def mapping_path() -> Path:
    return Path(os.environ.get("HRLMS_LMS_MAPPING") or DEFAULT_LMS_MAPPING)


def _plain(node: yaml.Node) -> Any:
    return yaml.safe_load(yaml.serialize(node))


def load(path: str | Path | None = None) -> OutboundMapping:
    """Read and parse the mapping (paths, names, expression shapes); `check` does the rest."""
    file = Path(path) if path else mapping_path()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise MappingError(f"LMS mapping {file}: cannot be read ({err.strerror})") from None
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as err:
        raise MappingError(f"LMS mapping {file}: not valid YAML: {err}") from None
    if not isinstance(root, yaml.MappingNode):
        raise MappingError(f"LMS mapping {file}: expected keys 'name' and 'attributes' at the top")
    top = {k.value: v for k, v in root.value}
    entries = top.get("attributes")
    if not isinstance(entries, yaml.SequenceNode) or not entries.value:
        raise MappingError(f"LMS mapping {file}, line {root.start_mark.line + 1}: 'attributes' must be a "
                           f"non-empty list")
    problems: list[str] = []
    attrs: list[Attribute] = []
    seen_names: dict[str, int] = {}
    seen_paths: dict[str, int] = {}
    for node in entries.value:
        line = node.start_mark.line + 1
        where = f"{file}, line {line}"
        if not isinstance(node, yaml.MappingNode):
            problems.append(f"{where}: each attribute is a mapping with name, path and from or expr")
            continue
        e = {k.value: v for k, v in node.value}
        unknown = sorted(set(e) - {"name", "path", "from", "expr"})
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(unknown)} (name, path, from, expr)")
        name = _plain(e["name"]) if "name" in e else None
        path = _plain(e["path"]) if "path" in e else None
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"{where}: name {name!r} must be lower-case letters, digits and _ (e.g. cost_center)")
            continue
        target = parse_path(path) if isinstance(path, str) else None
        if target is None:
            problems.append(f"{where} ({name!r}): path {path!r} is not an attribute path such as 'title', "
                            f"'name.givenName', 'emails[type eq \"work\"].value' or '<extension urn>:attribute'")
            continue
        if ("from" in e) == ("expr" in e):
            problems.append(f"{where} ({name!r}): give exactly one of 'from' (a column) or 'expr' (an expression)")
            continue
        source = _plain(e["from"]) if "from" in e else _plain(e["expr"])
        if "from" in e and not isinstance(source, str):
            problems.append(f"{where} ({name!r}): 'from' names one column of {SOURCE_RELATION}")
            continue
        if name in seen_names:
            problems.append(f"{where}: name {name!r} is already used on line {seen_names[name]}")
            continue
        key = (target.schema + ":" + target.attr + (f"[{target.type}]" if target.type else "")
               + (f".{target.sub}" if target.sub else "")).lower()
        if key in seen_paths:
            problems.append(f"{where} ({name!r}): path {path!r} is already mapped on line {seen_paths[key]}")
            continue
        seen_names[name], seen_paths[key] = line, line
        attrs.append(Attribute(name, path.strip(), target, source, line))
    if problems:
        raise MappingError("LMS mapping refused:\n  " + "\n  ".join(problems))
    return OutboundMapping(file, str(_plain(top["name"])) if "name" in top else file.stem, tuple(attrs))


# --- expressions -------------------------------------------------------------------------------------

def _literal(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def compile_expr(expr: Any, columns: set[str]) -> str:
    """SQL for one expression over the row `d` of the source relation (ValueError: a bad expression)."""
    if isinstance(expr, str):
        if expr not in columns:
            raise ValueError(f"unknown column {expr!r} (columns of {SOURCE_RELATION}: {', '.join(sorted(columns))})")
        return f'd."{expr}"'
    if not isinstance(expr, dict) or not expr:
        raise ValueError(f"{expr!r} is neither a column name nor an expression ({', '.join(_OPS)})")
    op = next((k for k in expr if k in _OPS), None)
    if op is None:
        raise ValueError(f"unknown expression {sorted(expr)} (one of {', '.join(_OPS)})")
    arg = expr[op]
    allowed = {"lookup": {"lookup", "table", "default"}, "date_format": {"date_format", "format"}}.get(op, {op})
    extra = sorted(set(expr) - allowed)
    if extra:
        raise ValueError(f"{op}: unexpected key(s) {', '.join(extra)}")
    sub = lambda e: compile_expr(e, columns)  # noqa: E731
    if op == "column":
        return sub(str(arg))
    if op == "literal":
        if isinstance(arg, (dict, list)):
            raise ValueError("literal: a single text, number or boolean")
        return _literal(arg)
    if op in ("lower", "upper", "trim"):
        return f"{'btrim' if op == 'trim' else op}(({sub(arg)})::text)"
    if op in ("concat", "default"):
        if not isinstance(arg, list) or not arg:
            raise ValueError(f"{op}: a list of expressions")
        parts = [sub(a) for a in arg]
        if op == "concat":
            return "nullif(concat(" + ", ".join(f"({p})::text" for p in parts) + "), '')"
        return "coalesce(" + ", ".join(f"nullif(({p})::text, '')" for p in parts) + ")"
    if op == "lookup":
        table = expr.get("table")
        if not isinstance(table, dict) or not table:
            raise ValueError("lookup: 'table' maps HR values to LMS values")
        default = expr.get("default")
        otherwise = sub(default) if isinstance(default, dict) else _literal(default)
        whens = " ".join(f"when {_literal(str(k))} then {_literal(v)}" for k, v in table.items())
        return f"(case ({sub(arg)})::text {whens} else {otherwise} end)"
    fmt = expr.get("format")
    if not isinstance(fmt, str) or not fmt:
        raise ValueError("date_format: 'format' is a strftime pattern such as '%d.%m.%Y'")
    try:
        pg = strftime_to_pg(fmt)
    except _HrMappingError as err:
        raise ValueError(str(err)) from None
    return f"to_char({sub(arg)}, {_literal(pg)})"


# --- the LMS's schemas -------------------------------------------------------------------------------

def _rfc_schemas() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """RFC 7643's User and enterprise extension (scim2-models), for plans made before the LMS was read."""
    schemas = [m.to_schema().model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE) for m in (User, EnterpriseUser)]
    rt = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": "User", "name": "User",
          "endpoint": "/Users", "schema": CORE, "schemaExtensions": [{"schema": ENTERPRISE, "required": False}]}
    return schemas, [rt]


def refresh_lms_schemas(conn: psycopg.Connection, client: Any) -> None:
    """Read the LMS's /Schemas and /ResourceTypes and keep them (sync.lms_schemas) for the plan's check."""
    schemas, resource_types = client.schemas()
    with conn.transaction():
        conn.execute(
            """insert into sync.lms_schemas (base_url, schemas, resource_types) values (%s, %s, %s)
               on conflict (base_url) do update set schemas = excluded.schemas,
                   resource_types = excluded.resource_types, read_at = clock_timestamp()""",
            (client.config.base_url, psycopg.types.json.Jsonb(schemas), psycopg.types.json.Jsonb(resource_types)))


def _stored_schemas(conn: psycopg.Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    row = conn.execute("select schemas, resource_types, base_url from sync.lms_schemas "
                       "order by read_at desc limit 1").fetchone()
    if row:
        return row[0], row[1], f"the LMS at {row[2]}"
    return (*_rfc_schemas(), "RFC 7643 (the LMS's schemas were not read yet)")


@dataclass(frozen=True)
class CheckedMapping:
    """A mapping checked against the LMS's schemas and the mart: the SQL of each value, ready to plan."""
    mapping: OutboundMapping
    sql: dict[str, str]                      # name -> SQL value (to_jsonb-able) over alias d
    types: dict[str, str] = field(default_factory=dict)   # name -> SCIM type at the LMS

    @property
    def names(self) -> tuple[str, ...]:
        return self.mapping.names

    def attrs_sql(self) -> str:
        """jsonb of the values of the source row `d` (name -> value; empty ones left out)."""
        pairs = [f"'{n}', to_jsonb({self.sql[n]})" for n in self.names]
        chunks = [", ".join(pairs[i:i + 40]) for i in range(0, len(pairs), 40)]
        return "jsonb_strip_nulls(" + " || ".join(f"jsonb_build_object({c})" for c in chunks) + ")"

    def describe(self) -> dict[str, Any]:
        """What a plan keeps (sync.plans.outbound) and apply/reconcile read: names, paths, types."""
        return {"file": str(self.mapping.file), "name": self.mapping.name, "checksum": self.mapping.checksum,
                "attributes": [{"name": a.name, "path": a.path, "type": self.types.get(a.name)}
                               for a in self.mapping.attributes]}


def _find(attrs: list[Any], name: str) -> Any:
    return next((a for a in attrs or [] if (a.name or "").lower() == name.lower()), None)


def _types_of(conn: psycopg.Connection, sql: dict[str, str]) -> dict[str, int]:
    """The Postgres type of each compiled value (a query that returns no row; its description tells)."""
    if not sql:
        return {}
    with conn.cursor() as cur:
        cur.execute(f"select {', '.join(sql.values())} from {SOURCE_RELATION} d limit 0")
        return {n: d.type_code for n, d in zip(sql, cur.description)}


def check(conn: psycopg.Connection, mapping: OutboundMapping | None = None) -> CheckedMapping:
    """Check the mapping against the LMS's schemas (as last read) and the mart's columns; MappingError
    lists every problem with its line."""
    mapping = mapping or load()
    schema_docs, rt_docs, against = _stored_schemas(conn)
    schemas = {}
    for s in schema_docs:
        try:
            parsed = Schema.model_validate(s, scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        except ValueError as err:
            raise MappingError(f"{against}: schema {s.get('id')!r} cannot be read: {err}") from None
        schemas[(parsed.id or "").lower()] = parsed
    user_rt = None
    for r in rt_docs:
        rt = ResourceType.model_validate(r, scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        if (rt.name or rt.id or "").lower() == "user" or (rt.endpoint or "").rstrip("/").lower() == "/users":
            user_rt = rt
    if user_rt is None:
        raise MappingError(f"{against} declares no User resource type (/ResourceTypes)")
    core = (user_rt.schema_ or CORE).lower()
    extensions = {(e.schema_ or "").lower() for e in user_rt.schema_extensions or []}
    columns = {r[0] for r in conn.execute(
        "select column_name from information_schema.columns where table_schema = %s and table_name = %s",
        SOURCE_RELATION.split("."))}
    if not columns:
        raise MappingError(f"{SOURCE_RELATION} does not exist yet: build the marts before planning")

    problems: list[str] = []
    sql: dict[str, str] = {}
    types: dict[str, str] = {}
    mapped_top: set[tuple[str, str]] = set()
    for a in mapping.attributes:
        t, where = a.target, mapping.where(a)
        mapped_top.add((t.schema.lower(), t.attr.lower()))
        full = f"{t.schema}:{t.attr}".lower()
        if t.attr.lower() in OWNED and t.schema.lower() == core or full in OWNED:
            problems.append(f"{where}: hrlms sets {t.attr!r} itself (externalId, active, manager), it cannot "
                            f"be mapped")
            continue
        schema_id = t.schema.lower() if t.schema != CORE else core
        if schema_id != core and schema_id not in extensions:
            problems.append(f"{where}: the LMS's User resource type has no extension {t.schema!r} "
                            f"(it declares: {', '.join(sorted(extensions)) or 'none'})")
            continue
        schema = schemas.get(schema_id)
        if schema is None:
            problems.append(f"{where}: the LMS serves no schema {t.schema!r} (/Schemas)")
            continue
        top = _find(schema.attributes, t.attr)
        if top is None:
            problems.append(f"{where}: the LMS's schema {schema.id} has no attribute {t.attr!r}")
            continue
        leaf = top
        multi = bool(top.multi_valued)
        if multi and t.type is None:
            problems.append(f"{where}: {t.attr!r} is multi-valued: name one value, e.g. "
                            f"'{t.attr}[type eq \"work\"].value'")
            continue
        if t.type is not None and not multi:
            problems.append(f"{where}: {t.attr!r} is not multi-valued: no [type eq …] filter")
            continue
        if t.sub is not None:
            leaf = _find(top.sub_attributes, t.sub)
            if leaf is None:
                subs = ", ".join(s.name for s in top.sub_attributes or []) or "none"
                problems.append(f"{where}: {t.attr!r} has no sub-attribute {t.sub!r} (it has: {subs})")
                continue
            if t.type is not None and _find(top.sub_attributes, "type") is None:
                problems.append(f"{where}: {t.attr!r} has no 'type' sub-attribute to filter on")
                continue
        elif getattr(top.type, "value", top.type) == "complex":
            subs = ", ".join(s.name for s in top.sub_attributes or [])
            problems.append(f"{where}: {t.attr!r} is complex: map its sub-attributes ({subs})")
            continue
        for part in (top, leaf):
            if getattr(part.mutability, "value", part.mutability) == "readOnly":
                problems.append(f"{where}: {part.name!r} is read-only at the LMS (mutability readOnly)")
                break
        else:
            try:
                sql[a.name] = compile_expr(a.source, columns)
            except ValueError as err:
                problems.append(f"{where}: bad expression: {err}")
                continue
            types[a.name] = str(getattr(leaf.type, "value", leaf.type) or "string")
    if sql:
        try:
            with conn.transaction():
                pg_types = _types_of(conn, sql)
        except psycopg.Error:
            pg_types = {}
            for a in mapping.attributes:   # which one: one by one
                if a.name not in sql:
                    continue
                try:
                    with conn.transaction():
                        pg_types.update(_types_of(conn, {a.name: sql[a.name]}))
                except psycopg.Error as one:
                    problems.append(f"{mapping.where(a)}: bad expression: "
                                    f"{(one.diag.message_primary or str(one)).strip()}")
        for a in mapping.attributes:
            if a.name not in pg_types:
                continue
            want, oid = types[a.name], pg_types[a.name]
            fits = _PG_TYPES.get(oid, set())
            is_format = isinstance(a.source, dict) and "date_format" in a.source
            if want == "dateTime" and is_format:
                continue          # text in the format the mapping chose
            if oid in _PG_TEXT_ARRAYS:
                t = a.target
                shared = [o.name for o in mapping.attributes if o is not a and o.target.schema == t.schema
                          and o.target.attr.lower() == t.attr.lower() and o.target.type == t.type]
                if t.type is None or want not in ("string", "reference"):
                    problems.append(f"{mapping.where(a)}: wrong type: a list of values goes to one typed value of "
                                    f"a multi-valued attribute (e.g. 'roles[type eq \"lms\"].value'), not to a "
                                    f"{want}")
                elif shared:
                    problems.append(f"{mapping.where(a)}: a list of values is the only value of "
                                    f"{t.attr}[type eq \"{t.type}\"]; also mapped: {', '.join(shared)}")
                continue
            if want not in fits:
                problems.append(f"{mapping.where(a)}: wrong type: the LMS's {a.target.sub or a.target.attr!r} is "
                                f"{want}, the value is {_PG_NAMES.get(oid, f'type {oid}')}")
            elif want == "dateTime":
                value = sql[a.name]
                sql[a.name] = (f"to_char(({value})::timestamp, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')" if oid != 1184 else
                               f"to_char(({value}) at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
    core_schema = schemas.get(core)
    for attr in (core_schema.attributes if core_schema else []) or []:
        required = getattr(attr.required, "value", attr.required)
        mutability = getattr(attr.mutability, "value", attr.mutability)
        if str(required).lower() == "true" and mutability != "readOnly" and attr.name.lower() not in OWNED \
                and (CORE.lower(), attr.name.lower()) not in mapped_top:
            problems.append(f"{mapping.file}: the LMS requires {attr.name!r} ({core_schema.id}): map it")
    if problems:
        raise MappingError(f"LMS mapping refused (checked against {against}):\n  " + "\n  ".join(problems))
    return CheckedMapping(mapping, sql, types)


# --- payloads ----------------------------------------------------------------------------------------

def _targets(outbound: dict[str, Any]) -> list[tuple[str, Target]]:
    out = []
    for a in outbound["attributes"]:
        t = parse_path(a["path"])
        if t is None:                       # checked when the plan was made
            raise ValueError(f"bad attribute path {a['path']!r} in the plan's mapping")
        out.append((a["name"], t))
    return out


def _put(resource: dict[str, Any], t: Target, value: Any) -> None:
    box = resource if t.container is None else resource.setdefault(t.container, {})
    if t.type is not None:
        items = box.setdefault(t.attr, [])
        if isinstance(value, list):            # several values of this type (roles): one item each
            for v in value:
                items.append({"type": t.type, t.sub: v})
            return
        item = next((i for i in items if i.get("type") == t.type), None)
        if item is None:
            item = {"type": t.type}
            if not items:
                item["primary"] = True
            items.append(item)
        item[t.sub] = value
    elif t.sub is not None:
        box.setdefault(t.attr, {})[t.sub] = value
    else:
        box[t.attr] = value


def _schemas_of(resource: dict[str, Any]) -> list[str]:
    return [CORE, *sorted(k for k in resource if k.startswith("urn:"))]


def user_resource(desired: dict[str, Any], outbound: dict[str, Any], manager_lms_id: str | None = None
                  ) -> dict[str, Any]:
    """The POST /Users body: externalId, active, the mapped values (none empty) and the manager."""
    attrs = desired.get("attrs") or {}
    resource: dict[str, Any] = {"externalId": desired["person_id"], "active": bool(desired.get("is_active", True))}
    for name, t in _targets(outbound):
        if attrs.get(name) is not None:
            _put(resource, t, attrs[name])
    if manager_lms_id:
        resource.setdefault(ENTERPRISE, {})["manager"] = {"value": manager_lms_id}
    return {"schemas": _schemas_of(resource), **resource}


def patch_body(desired: dict[str, Any], outbound: dict[str, Any], names: list[str], *,
               active: bool = False) -> dict[str, Any]:
    """PATCH replacing the attributes `names` (removing those now empty); a typed value of a multi-valued
    attribute replaces that attribute as a whole with every mapped value of it. `active`: also set active."""
    attrs = desired.get("attrs") or {}
    targets = _targets(outbound)
    ops: list[dict[str, Any]] = []
    done: set[str] = set()
    wanted = set(names)
    for name, t in targets:
        if name not in wanted:
            continue
        if t.type is not None:
            if t.whole in done:
                continue
            done.add(t.whole)
            box: dict[str, Any] = {}
            for other, ot in targets:
                if ot.whole == t.whole and attrs.get(other) is not None:
                    _put(box, ot, attrs[other])
            items = (box.get(t.container) or {}).get(t.attr) if t.container else box.get(t.attr)
            ops.append({"op": "replace", "path": t.whole, "value": items} if items else
                       {"op": "remove", "path": t.whole})
            continue
        value = attrs.get(name)
        ops.append({"op": "replace", "path": _path_of(t), "value": value} if value is not None else
                   {"op": "remove", "path": _path_of(t)})
    if active:
        ops.append({"op": "replace", "path": "active", "value": bool(desired.get("is_active"))})
    return {"schemas": [PATCH_OP], "Operations": ops}


def _path_of(t: Target) -> str:
    inner = t.attr + (f".{t.sub}" if t.sub else "")
    return inner if t.schema == CORE else f"{t.schema}:{inner}"


def value_at(resource: dict[str, Any], path: str) -> Any:
    """The value at a mapped path of an LMS resource (None when absent); a typed value of a multi-valued
    attribute that the LMS holds several times: their sorted list."""
    t = parse_path(path)
    if t is None:
        return None
    box = resource if t.container is None else _get_ci(resource, t.container)
    value = _get_ci(box, t.attr)
    if t.type is not None:
        found = [_get_ci(i, t.sub) for i in value or [] if isinstance(i, dict) and i.get("type") == t.type]
        found = [v for v in found if v is not None]
        return None if not found else found[0] if len(found) == 1 else sorted(found, key=str)
    if t.sub is not None:
        return _get_ci(value, t.sub)
    return value


def _get_ci(box: Any, key: str | None) -> Any:
    if not isinstance(box, dict) or key is None:
        return None
    if key in box:
        return box[key]
    low = key.lower()
    return next((v for k, v in box.items() if k.lower() == low), None)
