"""The desired state the sync reads (marts.lms_desired_users / _groups / _group_members), set directly
by the sync tests instead of being built by dbt: the tables, people rows and a replace-all setter."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from hrlms.sync import outbound
from hrlms.warehouse import db

#: The columns of marts.lms_desired_users that person() fills.
COLS = ("person_id", "user_name", "given_name", "family_name", "display_name", "email", "title",
        "employee_number", "department", "is_active", "manager_person_id")


#: The columns the default outbound mapping reads besides COLS (left empty by person()).
MAPPED_EXTRA = ("time_zone text, country text, location_code text, employment_type text, job_code text, "
                "job_family text, org_unit_code text, preferred_name text, hire_date date, start_date date, "
                "roles text[], entitlements text[]")

_DEFAULT = outbound.load(outbound.DEFAULT_LMS_MAPPING)
#: The default mapping as a plan keeps it (sync.plans.outbound): what lms_user/lms_patch build requests with.
DEFAULT_OUTBOUND = {"attributes": [{"name": a.name, "path": a.path} for a in _DEFAULT.attributes]}
DEFAULT_NAMES = _DEFAULT.names


def with_attrs(row: Mapping) -> dict:
    """A desired row with its mapped values (attrs) as a plan computes them, for the default mapping's
    column entries (expressions are left out): fixtures that put accounts into the LMS directly."""
    if "attrs" in row:
        return dict(row)
    attrs = {a.name: row[a.source] for a in _DEFAULT.attributes
             if isinstance(a.source, str) and row.get(a.source) is not None}
    return {**row, "attrs": attrs}


def lms_user(row: Mapping, manager_lms_id: str | None = None) -> dict:
    """The POST /Users body hrlms would send for this desired row (default mapping)."""
    return outbound.user_resource(with_attrs(row), DEFAULT_OUTBOUND, manager_lms_id)


def lms_patch(row: Mapping, names: list[str], *, active: bool = False) -> dict:
    """The PATCH hrlms would send for these mapped attributes of this desired row (default mapping)."""
    return outbound.patch_body(with_attrs(row), DEFAULT_OUTBOUND, names, active=active)


def pid(i: int) -> str:
    return f"P{i:07d}"


def person(i: int, **over):
    """A desired account for person number i (no manager); keyword arguments override columns."""
    row = {"person_id": pid(i), "user_name": f"user{i}", "given_name": f"G{i}", "family_name": f"F{i}",
           "display_name": f"G{i} F{i}", "email": f"user{i}@example.com", "title": "Analyst",
           "employee_number": str(1000 + i), "department": "Finance", "is_active": True,
           "manager_person_id": None}
    row.update(over)
    return row


@contextmanager
def desired_state_db(url: str, *, groups: bool = True) -> Iterator:
    """A connection to the (fresh) database at url, bootstrapped, with empty desired-state marts:
    lms_desired_users, and with groups=True also lms_desired_groups and lms_desired_group_members."""
    with db.connect(url) as c:
        db.bootstrap(c)
        create_desired_marts(c, groups=groups)
        yield c


def create_desired_marts(conn, *, groups: bool = True) -> None:
    """The empty desired-state marts in a bootstrapped database (see desired_state_db)."""
    conn.execute("create schema marts")
    conn.execute("create table marts.lms_desired_users (person_id text, user_name text, given_name text, "
                 "family_name text, display_name text, email text, title text, employee_number text, "
                 "department text, access_from_on date, access_until_on date, is_active boolean, "
                 f"manager_person_id text, {MAPPED_EXTRA})")
    if groups:
        conn.execute("create table marts.lms_desired_groups (group_key text, display_name text, group_kind text, "
                     "org_unit_code text)")
        conn.execute("create table marts.lms_desired_group_members (group_key text, person_id text)")


def set_desired(conn, people: Iterable[Mapping], groups: Mapping[str, str] | None = None,
                members: Mapping[str, Iterable[int]] | None = None) -> None:
    """Replace the desired state. people: rows (person()); groups: {group_key "kind:ORG": display_name};
    members: {group_key: [person numbers or person ids]}. The group tables are replaced when they exist."""
    with conn.transaction(), conn.cursor() as cur:
        has_groups = cur.execute("select to_regclass('marts.lms_desired_groups') is not null").fetchone()[0]
        if has_groups:
            cur.execute("truncate marts.lms_desired_users, marts.lms_desired_groups, "
                        "marts.lms_desired_group_members")
        else:
            cur.execute("truncate marts.lms_desired_users")
        cur.executemany(f"insert into marts.lms_desired_users ({', '.join(COLS)}) values "
                        f"({', '.join(['%s'] * len(COLS))})", [tuple(r[c] for c in COLS) for r in people])
        if groups or members:
            cur.executemany("insert into marts.lms_desired_groups values (%s, %s, %s, %s)",
                            [(k, name, k.split(":")[0], k.split(":")[1]) for k, name in (groups or {}).items()])
            cur.executemany("insert into marts.lms_desired_group_members values (%s, %s)",
                            [(k, pid(i) if isinstance(i, int) else i)
                             for k, ids in (members or {}).items() for i in ids])
