"""The expectation suites, as plain Python objects (diffable in review).

`meta.rule` names each check: it is the reason code stored with quarantined rows and shown to HR.
Batch suites stop the run; row suites quarantine the rows they flag and let the rest flow.
GX is imported by the builders, not with this module: the gate's own SQL (hrlms.quality.gate) reads the
constants here while GX is still being imported (gate.preload_gx).
"""
from __future__ import annotations

EMAIL_REGEX = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
EMPLOYMENT_STATUSES = ["active", "leave", "terminated", "prehire"]


def _m(rule: str, field: str, reason: str) -> dict:
    return {"rule": rule, "field": field, "reason": reason}


def workers_batch() -> list:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectTableRowCountToBeBetween(
            min_value={"$PARAMETER": "min_rows"},
            meta=_m("row_count", "", "The file has no data rows, or far fewer than the previous snapshot")),
        gxe.ExpectColumnValuesToBeUnique(
            column="person_id",
            meta=_m("duplicate_person_id", "person_id",
                    "The same person_id appears on more than one line with different content")),
    ]


def workers_rows() -> list:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(
            column="person_id", meta=_m("missing_person_id", "person_id", "person_id is empty")),
        gxe.ExpectColumnValuesToBeInSet(
            column="copy_no", value_set=[1],
            meta=_m("duplicate_row", "", "Exact copy of an earlier line (the first copy is kept)")),
        gxe.ExpectColumnValuesToNotBeNull(
            column="first_name", meta=_m("missing_first_name", "first_name", "First name is empty")),
        gxe.ExpectColumnValuesToNotBeNull(
            column="last_name", meta=_m("missing_last_name", "last_name", "Last name is empty")),
        gxe.ExpectColumnValuesToMatchRegex(
            column="work_email", regex=EMAIL_REGEX,
            meta=_m("invalid_email", "work_email", "Work email is not a valid address")),
        gxe.ExpectColumnValuesToNotBeNull(
            column="work_email", meta=_m("missing_email", "work_email", "Work email is empty")),
        gxe.ExpectColumnValuesToNotBeNull(
            column="hire_date_raw", meta=_m("missing_hire_date", "hire_date", "Hire date is empty")),
        # one person's value on another person's line (hrlms.quality.gate.KEY_CONFLICTS_SQL): the LMS keeps
        # userNames unique and would refuse it; the person who keeps it is in dq.quarantine.related_key
        gxe.ExpectColumnValuesToBeNull(
            column="email_held_by",
            meta=_m("duplicate_email", "work_email",
                    "Work email is another person's (in this file, or their account in the LMS)")),
        gxe.ExpectColumnValuesToBeNull(
            column="username_held_by",
            meta=_m("duplicate_username", "username",
                    "LMS user name (login, or the work email when there is none) is another person's")),
        gxe.ExpectColumnValuesToBeNull(
            column="employee_number_held_by",
            meta=_m("duplicate_employee_number", "employee_number",
                    "Employee number is another person's, who is not linked to this one as a rehire")),
        gxe.ExpectColumnValuesToBeNull(
            column="unparseable_date_field",
            meta=_m("unparseable_date", "", "A date does not match the export's date format")),
        # every date that moves an account: a typo'd start date (2202) or an end date of 9999/2200 would
        # otherwise decide who has access
        *(gxe.ExpectColumnValuesToBeBetween(
            column=col, min_value="1900-01-01", max_value="2100-12-31",
            meta=_m("implausible_date", col, f"{label} is before 1900 or after 2100"))
          for col, label in (("hire_date", "Hire date"), ("start_date", "Start date"),
                             ("termination_date", "Termination date"), ("last_day_of_work", "Last day of work"))),
        gxe.ExpectColumnValuesToBeInSet(
            column="employment_status", value_set=EMPLOYMENT_STATUSES,
            meta=_m("unknown_status", "employment_status",
                    "Employment status is not one the mapping knows (add it to value_maps)")),
        # a last day of work before the hire date (e.g. a 1900-01-01 placeholder) would deactivate the account;
        # before the termination check, so a row with both reports the termination date (one entry per rule)
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="last_day_of_work", column_B="hire_date", or_equal=True,
            ignore_row_if="either_value_is_missing",
            meta=_m("termination_before_hire", "last_day_of_work", "Last day of work is before the hire date")),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="termination_date", column_B="hire_date", or_equal=True,
            ignore_row_if="either_value_is_missing",
            meta=_m("termination_before_hire", "termination_date", "Termination date is before the hire date")),
    ]


def org_units_batch() -> list:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectTableRowCountToBeBetween(
            min_value={"$PARAMETER": "min_rows"},
            meta=_m("row_count", "", "The file has no data rows, or far fewer than the previous snapshot")),
        gxe.ExpectColumnValuesToBeUnique(
            column="org_unit_code",
            meta=_m("duplicate_org_unit_code", "org_unit_code", "The same org unit code appears twice")),
        gxe.ExpectColumnValuesToNotBeNull(
            column="org_unit_code", meta=_m("missing_org_unit_code", "org_unit_code", "Org unit code is empty")),
    ]


# suite name -> (entity, kind, builder, gate view)
SUITES = {
    "workers_batch": ("workers", "batch", workers_batch, "gate_workers_distinct"),
    "workers_rows": ("workers", "rows", workers_rows, "gate_workers"),
    "org_units_batch": ("org_units", "batch", org_units_batch, "gate_org_units"),
}
