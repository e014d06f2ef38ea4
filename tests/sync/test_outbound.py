"""The outbound mapping (hrlms.sync.outbound) against a real scim2-server serving a custom extension schema:
mapped attributes arrive, follow HR, a rerun sends nothing; invalid mappings are refused at plan time with
the file and line and the LMS gets no write; reconcile reports drift on a mapped custom attribute."""
from __future__ import annotations

import json
import textwrap
import time
from datetime import date

import pytest
from scim2_models import Context, EnterpriseUser, Group, User

from hrlms.devenv.scim import LocalScimServer
from hrlms.sync import outbound
from hrlms.sync.__main__ import main as sync_cli
from hrlms.sync.apply import apply_plan
from hrlms.sync.plan import make_plan, preview_mapping
from hrlms.sync.reconcile import reconcile
from hrlms.sync.scim import ENTERPRISE, LmsConfig, ScimClient

from .helpers import desired_state_db, person, set_desired

D = date(2026, 3, 2)
LMS_EXT = "urn:example:lms:2.0:User"
CORE_RT = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"


def _schema_doc(model) -> dict:
    return model.to_schema().model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE, exclude={"meta"})


def _lms_schemas() -> tuple[list[dict], list[dict]]:
    """RFC 7643's schemas plus an LMS extension: costCenterName, hireDate (dateTime), badgeCount (read-only)."""
    attr = {"multiValued": False, "required": False, "caseExact": False, "returned": "default", "uniqueness": "none"}
    custom = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"], "id": LMS_EXT, "name": "LmsUser",
              "description": "The LMS's own user fields",
              "attributes": [{"name": "costCenterName", "type": "string", "mutability": "readWrite", **attr},
                             {"name": "hireDate", "type": "dateTime", "mutability": "readWrite", **attr},
                             {"name": "badgeCount", "type": "integer", "mutability": "readOnly", **attr}]}
    schemas = [_schema_doc(User), _schema_doc(Group), _schema_doc(EnterpriseUser), custom]
    types = [{"schemas": [CORE_RT], "id": "User", "name": "User", "endpoint": "/Users",
              "schema": "urn:ietf:params:scim:schemas:core:2.0:User",
              "schemaExtensions": [{"schema": ENTERPRISE, "required": False}, {"schema": LMS_EXT, "required": False}]},
             {"schemas": [CORE_RT], "id": "Group", "name": "Group", "endpoint": "/Groups",
              "schema": "urn:ietf:params:scim:schemas:core:2.0:Group"}]
    return schemas, types


@pytest.fixture
def lms(tmp_path, monkeypatch):
    schemas, types = _lms_schemas()
    with LocalScimServer(tmp_path / "lms", keep_log=True, schemas=schemas, resource_types=types) as server:
        monkeypatch.setenv("HRLMS_LMS_URL", server.base_url)
        monkeypatch.setenv("HRLMS_LMS_TOKEN", server.token)
        with ScimClient(LmsConfig(server.base_url, server.token)) as client:
            yield server, client


DEFAULT_TEXT = outbound.DEFAULT_LMS_MAPPING.read_text()
CUSTOM = DEFAULT_TEXT + "".join(f"  {line}\n" for line in f"""\
- name: cost_center_name
  path: {LMS_EXT}:costCenterName
  expr:
    concat: [org_unit_code, {{literal: " / "}}, {{upper: department}}]
- name: hire_date
  path: {LMS_EXT}:hireDate
  from: hire_date
- name: locale
  path: locale
  expr: {{lookup: country, table: {{JP: ja-JP, DE: de-DE}}, default: en-US}}""".splitlines())


def _people(**changes) -> list[dict]:
    rows = [person(1, org_unit_code="FIN", hire_date=date(2024, 1, 2), country="JP", time_zone="Asia/Tokyo",
                   employment_type="employee"),
            person(2, org_unit_code="FIN", hire_date=date(2023, 6, 1), country="DE", employment_type="contractor"),
            person(3, org_unit_code="OPS", department="Operations", hire_date=None, country=None)]
    for row in rows:
        row.update(changes.get(row["person_id"], {}))
    return rows


def _writes(server: LocalScimServer) -> list[str]:
    """The write requests in the LMS's access log. The server logs a request after answering it, so a read
    is sent first and waited for in the log: every request answered before it is logged by then."""
    def reads() -> int:
        return server.log_path.read_text().count('"GET /ServiceProviderConfig')

    seen = reads()
    with ScimClient(LmsConfig(server.base_url, server.token)) as probe:
        probe.service_provider_config()
    deadline = time.monotonic() + 10
    while reads() <= seen and time.monotonic() < deadline:
        time.sleep(0.02)
    return [line for line in server.log_path.read_text().splitlines()
            if any(f'"{m} ' in line for m in ("POST", "PATCH", "PUT", "DELETE"))]


def _users(client) -> dict[str, dict]:
    return {u["externalId"]: u for u in client.iter_users()}


def test_custom_extension_attributes_arrive_follow_hr_and_a_rerun_sends_nothing(fresh_db, lms, tmp_path,
                                                                                monkeypatch):
    server, client = lms
    mapping = tmp_path / "lms_mapping.yaml"
    mapping.write_text(CUSTOM)
    monkeypatch.setenv("HRLMS_LMS_MAPPING", str(mapping))
    with desired_state_db(fresh_db) as conn:
        _set(conn, _people())
        outbound.refresh_lms_schemas(conn, client)
        plan = make_plan(conn, logical_date=D, snapshot_id=1)
        assert plan.counts == {"create_user": 3}
        apply_plan(conn, plan.plan_id, client)

        users = _users(client)
        ext = users["P0000001"][LMS_EXT]
        assert ext == {"costCenterName": "FIN / FINANCE", "hireDate": "2024-01-02T00:00:00Z"}
        assert users["P0000001"]["locale"] == "ja-JP" and users["P0000002"]["locale"] == "de-DE"
        assert users["P0000003"]["locale"] == "en-US"                         # the lookup's default
        assert users["P0000001"]["timezone"] == "Asia/Tokyo" and users["P0000001"]["userType"] == "Employee"
        assert users["P0000002"]["userType"] == "Contractor"
        assert users["P0000001"]["addresses"] == [{"type": "work", "country": "JP", "primary": True}]
        assert "hireDate" not in users["P0000003"][LMS_EXT]                   # empty: not sent
        assert "addresses" not in users["P0000003"]

        # a second run sends nothing
        before = len(_writes(server))
        again = make_plan(conn, logical_date=D, snapshot_id=1)
        assert again.counts == {}
        apply_plan(conn, again.plan_id, client)
        assert len(_writes(server)) == before

        # HR changes: a transfer (department + cost center follow), a move to Germany, a blanked country
        _set(conn, _people(P0000001={"department": "Legal", "org_unit_code": "LEG"},
                           P0000002={"country": None}, P0000003={"country": "DE"}))
        changed = make_plan(conn, logical_date=date(2026, 3, 3), snapshot_id=2)
        rows = dict(conn.execute("select person_id, changed_fields from sync.ops where plan_id = %s",
                                 (changed.plan_id,)).fetchall())
        assert rows == {"P0000001": ["department", "cost_center_name"],
                        "P0000002": ["work_country", "locale"],
                        "P0000003": ["work_country", "locale"]}
        apply_plan(conn, changed.plan_id, client)
        users = _users(client)
        assert users["P0000001"][LMS_EXT]["costCenterName"] == "LEG / LEGAL"
        assert users["P0000001"][ENTERPRISE]["department"] == "Legal"
        assert "addresses" not in users["P0000002"] and users["P0000002"]["locale"] == "en-US"
        assert users["P0000003"]["addresses"] == [{"type": "work", "country": "DE", "primary": True}]
        assert make_plan(conn, logical_date=date(2026, 3, 3), snapshot_id=2).counts == {}

        # reconcile: a mapped custom attribute edited in the LMS is drift; remaster puts it back
        client.patch_user(users["P0000002"]["id"], {
            "schemas": [outbound.PATCH_OP],
            "Operations": [{"op": "replace", "path": f"{LMS_EXT}:costCenterName", "value": "edited"}]})
        found = reconcile(conn, client)
        drift = [(f.external_id, f.field, f.applied_value, f.lms_value) for f in found.findings]
        assert drift == [("P0000002", "cost_center_name", "FIN / FINANCE", "edited")]
        fixed = reconcile(conn, client, remaster=True)
        assert fixed.applied["ops"] == {"update_user": 1}
        assert _users(client)["P0000002"][LMS_EXT]["costCenterName"] == "FIN / FINANCE"
        assert reconcile(conn, client).findings == []


def _set(conn, rows: list[dict]) -> None:
    """The desired state with the mart's extra columns (helpers.set_desired fills the default ones)."""
    set_desired(conn, rows)
    extra = ("org_unit_code", "hire_date", "country", "time_zone", "employment_type")
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(f"update marts.lms_desired_users set {', '.join(f'{c} = %s' for c in extra)} "
                        f"where person_id = %s", [(*(r.get(c) for c in extra), r["person_id"]) for r in rows])


BAD = textwrap.dedent(f"""\
    name: bad
    attributes:
      - name: user_name
        path: userName
        from: user_name
      - name: nickname
        path: nickNameX
        from: title
      - name: badges
        path: {LMS_EXT}:badgeCount
        from: employee_number
      - name: hired
        path: {LMS_EXT}:hireDate
        from: title
      - name: shouting
        path: title
        expr: {{shout: title}}
      - name: phone
        path: phoneNumbers
        from: title
      - name: cost
        path: {LMS_EXT}:costCenterName
        from: cost_centre
    """)


def test_invalid_mappings_are_refused_at_plan_time_with_file_and_line(fresh_db, lms, tmp_path, monkeypatch):
    server, client = lms
    bad = tmp_path / "bad_mapping.yaml"
    bad.write_text(BAD)
    monkeypatch.setenv("HRLMS_LMS_MAPPING", str(bad))
    with desired_state_db(fresh_db) as conn:
        _set(conn, _people())
        outbound.refresh_lms_schemas(conn, client)
        with pytest.raises(outbound.MappingError) as err:
            make_plan(conn, logical_date=D, snapshot_id=1)
        msg = str(err.value)
        expected = {6: "has no attribute 'nickNameX'", 9: "read-only", 12: "wrong type", 15: "bad expression",
                    18: "multi-valued", 21: "unknown column 'cost_centre'"}
        for line, problem in expected.items():
            hit = [m for m in msg.splitlines() if f"{bad}, line {line} " in m]
            assert hit and problem in hit[0], (line, problem, msg)
        assert conn.execute("select count(*) from sync.plans").fetchone()[0] == 0
        assert conn.execute("select count(*) from sync.ops").fetchone()[0] == 0
        # a mapping that does not parse at all: its line too
        broken = tmp_path / "broken.yaml"
        broken.write_text("name: x\nattributes:\n  - name: Title\n    path: title\n    from: title\n")
        with pytest.raises(outbound.MappingError, match=rf"{broken}, line 3: name 'Title'"):
            outbound.load(broken)
    assert _writes(server) == [], "the LMS must see no write"
    assert list(client.iter_users()) == []


def test_a_mapping_change_is_previewed_then_compares_every_account(fresh_db, lms, tmp_path, monkeypatch, capsys):
    server, client = lms
    with desired_state_db(fresh_db) as conn:
        _set(conn, _people())
        outbound.refresh_lms_schemas(conn, client)
        apply_plan(conn, make_plan(conn, logical_date=D, snapshot_id=1).plan_id, client)
        candidate = tmp_path / "candidate.yaml"
        candidate.write_text(CUSTOM)
        before = len(_writes(server))
        seen = preview_mapping(conn, str(candidate))
        assert seen["attributes"] == {"cost_center_name": 3, "hire_date": 2, "locale": 3}
        assert seen["ops"] == {"update_user": 3} and seen["held"] == []
        assert conn.execute("select count(*) from sync.plans").fetchone()[0] == 1, "a preview stores nothing"
        assert len(_writes(server)) == before
        # the command prints the same
        assert sync_cli(["preview-mapping", str(candidate)]) == 0
        printed = capsys.readouterr().out
        assert "cost_center_name" in printed and "update_user 3" in printed and seen["checksum"] in printed
        bad = tmp_path / "bad.yaml"
        bad.write_text(BAD)
        assert sync_cli(["preview-mapping", str(bad)]) == 2
        assert f"{bad}, line 9 " in capsys.readouterr().err
        assert conn.execute("select count(*) from sync.plans").fetchone()[0] == 1
        # live: the next plan compares every account although nobody is dirty
        monkeypatch.setenv("HRLMS_LMS_MAPPING", str(candidate))
        live = make_plan(conn, logical_date=D, snapshot_id=1)
        assert live.scope["mode"] == "full" and "LMS mapping changed" in live.scope["because"]
        assert live.attribute_counts == seen["attributes"]
        assert json.loads(json.dumps(conn.execute("select outbound -> 'checksum' from sync.plans where plan_id = %s",
                                                  (live.plan_id,)).fetchone()[0])) == seen["checksum"]


ROLES = DEFAULT_TEXT + "".join(f"  {line}\n" for line in """\
- name: roles
  path: roles[type eq "hrlms"].value
  from: roles""".splitlines())


def _set_roles(conn, roles: dict[str, list[str] | None]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany("update marts.lms_desired_users set roles = %s where person_id = %s",
                        [(r, p) for p, r in roles.items()])


def test_roles_arrive_as_typed_values_and_a_mass_removal_is_held(fresh_db, lms, tmp_path, monkeypatch):
    server, client = lms
    mapping = tmp_path / "roles.yaml"
    mapping.write_text(ROLES)
    monkeypatch.setenv("HRLMS_LMS_MAPPING", str(mapping))
    people = [person(i) for i in range(1, 41)]
    ids = [p["person_id"] for p in people]
    with desired_state_db(fresh_db) as conn:
        set_desired(conn, people)
        _set_roles(conn, {p: ["manager"] for p in ids} | {ids[0]: ["hr-reporting", "manager"]})
        outbound.refresh_lms_schemas(conn, client)
        apply_plan(conn, make_plan(conn, logical_date=D, snapshot_id=1).plan_id, client)
        users = _users(client)
        assert users[ids[1]]["roles"] == [{"type": "hrlms", "value": "manager"}]
        assert sorted(r["value"] for r in users[ids[0]]["roles"]) == ["hr-reporting", "manager"]
        assert make_plan(conn, logical_date=D, snapshot_id=1).counts == {}
        assert reconcile(conn, client).findings == []

        # 13 of 40 managers lose the role at once (32%): held, nothing sent
        before = len(_writes(server))
        _set_roles(conn, {p: None for p in ids[1:14]})
        held = make_plan(conn, logical_date=date(2026, 3, 3), snapshot_id=2)
        assert held.held and any("13 roles values blanked of 40" in r for r in held.held_reasons), held.held_reasons
        apply_plan(conn, held.plan_id, client)
        assert len(_writes(server)) == before and "roles" in _users(client)[ids[1]]

        # two of them (and one of P1's two roles): applied, the LMS keeps the rest
        _set_roles(conn, {p: ["manager"] for p in ids[3:14]} | {ids[0]: ["manager"]})
        plan = make_plan(conn, logical_date=date(2026, 3, 3), snapshot_id=2)
        assert not plan.held and plan.attribute_counts == {"roles": 3}
        apply_plan(conn, plan.plan_id, client)
        users = _users(client)
        assert "roles" not in users[ids[1]] and "roles" not in users[ids[2]]
        assert users[ids[0]]["roles"] == [{"type": "hrlms", "value": "manager"}]
        assert users[ids[3]]["roles"] == [{"type": "hrlms", "value": "manager"}]
        assert reconcile(conn, client).findings == []
