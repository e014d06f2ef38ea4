"""An independent statement of what the LMS must hold, computed from the generator's truth files."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hrlms.sync.scim import ENTERPRISE
from hrlms.transform.dbt import project_vars

ROW_ERRORS = {"bad_email", "bad_date", "termination_before_hire", "unknown_status"}
LEAD = timedelta(hours=float(project_vars().get("access_lead_hours") or 0))
ATTRS = ("userName", "givenName", "familyName", "displayName", "email", "title", "employeeNumber", "department")


def desired(truth, day: date) -> tuple[dict[str, dict], set[str]]:
    """Desired LMS record per person (clean rows only) and the set of quarantined person ids."""
    bad = {d["person_id"] for d in truth.defects if d["defect"] in ROW_ERRORS}
    unknown_org = {d["person_id"] for d in truth.defects if d["defect"] == "unknown_org_code"}
    orgs = {o["org_unit_code"]: o["name"] for o in truth.org_units}
    out = {}
    for pid, w in truth.workers.items():
        if pid in bad:
            continue
        # The run's logical moment (00:00 UTC) seen in the worker's own time zone; a start counts
        # access_lead_hours ahead of it (dbt var).
        moment = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc)
        zone = ZoneInfo(w["time_zone"] or "UTC")
        local, local_ahead = moment.astimezone(zone).date(), (moment + LEAD).astimezone(zone).date()
        start = date.fromisoformat(w["start_date"] or w["hire_date"])
        until = w["last_day_of_work"] or w["termination_date"]
        active = (w["employment_status"] in ("active", "leave", "prehire") and start <= local_ahead
                  and (not until or date.fromisoformat(until) >= local))
        out[pid] = {
            "userName": w["username"] or w["work_email"],
            "givenName": w["first_name"], "familyName": w["last_name"],
            "displayName": f"{w['preferred_name'] or w['first_name']} {w['last_name']}",
            "email": w["work_email"], "title": w["job_title"] or None,
            "employeeNumber": w["employee_number"],
            # unknown org codes land in the holding unit (dbt var holding_org_unit_name)
            "department": "Unassigned (unknown org code)" if pid in unknown_org else orgs.get(w["org_unit_code"]),
            "active": active,
        }
    return out, bad


def next_state(prev: dict[str, dict], want: dict[str, dict], quarantined: set[str]) -> dict[str, dict]:
    """The LMS after one run: creates for new active people, full updates for active accounts,
    active=false only for leavers (attributes untouched), nothing for quarantined people."""
    state = {pid: dict(rec) for pid, rec in prev.items()}
    for pid, rec in want.items():
        old = state.get(pid)
        if old is None:
            if rec["active"]:
                state[pid] = dict(rec)
        elif rec["active"]:
            state[pid] = dict(rec)
        elif old["active"]:
            state[pid] = {**old, "active": False}
    for pid, old in prev.items():
        if pid not in want and pid not in quarantined and old["active"]:
            state[pid] = {**old, "active": False}
    return state


def lms_actual(client) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for u in client.iter_users(page_size=1000):
        assert u["externalId"] not in out, f"duplicate account for {u['externalId']}"
        name, ent = u.get("name") or {}, u.get(ENTERPRISE) or {}
        out[u["externalId"]] = {
            "userName": u["userName"], "givenName": name.get("givenName"), "familyName": name.get("familyName"),
            "displayName": u.get("displayName"), "email": ((u.get("emails") or [{}])[0]).get("value"),
            "title": u.get("title"), "employeeNumber": ent.get("employeeNumber"),
            "department": ent.get("department"), "active": u.get("active"),
        }
    return out


def diff(actual: dict[str, dict], expected: dict[str, dict]) -> list[str]:
    problems = [f"missing in LMS: {p}" for p in sorted(set(expected) - set(actual))]
    problems += [f"unexpected in LMS: {p}" for p in sorted(set(actual) - set(expected))]
    for pid in sorted(set(actual) & set(expected)):
        for k, v in expected[pid].items():
            if actual[pid].get(k) != v:
                problems.append(f"{pid}.{k}: LMS has {actual[pid].get(k)!r}, expected {v!r}")
    return problems
