"""The synthetic HR generator honours the mapping contract, is deterministic and records its defects."""
from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from hrlms.synth import DEFECT_KINDS, ORG_COLUMNS, ROW_ERRORS, WORKER_COLUMNS, Messiness, SyntheticHR, load_truth
from hrlms.synth.http_server import read_day_file
from hrlms.synth.reference import LOCATIONS

from .helpers import START, WORKERS, read_rows

MAPPING = yaml.safe_load((Path(__file__).resolve().parents[2] / "plugins/hrlms/mappings/synthetic_hr.yaml")
                         .read_text(encoding="utf-8"))["entities"]
W = MAPPING["workers"]
DATE_FMT = W["date_format"]
DATE_FIELDS = ("hire_date", "start_date", "termination_date", "last_day_of_work")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DAY1, DAY2, DAY3 = (START + timedelta(days=i) for i in range(3))


def ds(day: date) -> str:
    return day.isoformat()


def canonical(row: dict[str, str], skip: tuple[str, ...] = ()) -> dict[str, str | None]:
    """What staging should make of a raw row: trimmed, lower-cased logins, mapped codes, ISO dates."""
    out: dict[str, str | None] = {}
    for field, col in W["columns"].items():
        if field in skip:
            continue
        v = (row[col] or "").strip()
        if field in ("work_email", "username"):
            v = v.lower()
        if field in W["value_maps"] and v:
            v = W["value_maps"][field][v]
        if field in DATE_FIELDS and v:
            v = datetime.strptime(v, DATE_FMT).date().isoformat()
        out[field] = v or None
    return out


def day_files(run: Path, day: date, fmt: str = "csv") -> tuple[Path, Path, Path]:
    return run / f"workers_{ds(day)}.{fmt}", run / f"org_units_{ds(day)}.{fmt}", run / f"truth_{ds(day)}.jsonl"


# ---- contract -------------------------------------------------------------------------------------
def test_columns_match_mapping(csv_run: Path) -> None:
    workers, orgs, _ = day_files(csv_run, DAY1)
    assert WORKER_COLUMNS == W["columns"]
    assert ORG_COLUMNS == MAPPING["org_units"]["columns"]
    with open(workers, encoding="utf-8-sig") as fh:
        assert fh.readline().rstrip("\r\n").split(",") == list(W["columns"].values())
    with open(orgs, encoding="utf-8-sig") as fh:
        assert fh.readline().rstrip("\r\n").split(",") == list(MAPPING["org_units"]["columns"].values())
    assert workers.name == W["file_pattern"].format(ds=ds(DAY1))
    assert orgs.name == MAPPING["org_units"]["file_pattern"].format(ds=ds(DAY1))


def test_same_seed_is_byte_identical(csv_run: Path, csv_run_again: Path) -> None:
    names = sorted(p.name for p in csv_run.iterdir())
    assert names == sorted(p.name for p in csv_run_again.iterdir())
    assert len(names) == 9
    for name in names:
        assert (csv_run / name).read_bytes() == (csv_run_again / name).read_bytes(), name


def test_different_seed_differs(csv_run: Path, tmp_path: Path) -> None:
    SyntheticHR(WORKERS, START, seed=7).write_day(tmp_path)
    assert (tmp_path / f"workers_{ds(DAY1)}.csv").read_bytes() != day_files(csv_run, DAY1)[0].read_bytes()


# ---- rows versus truth --------------------------------------------------------------------------------
@pytest.mark.parametrize("day", [DAY1, DAY2, DAY3])
def test_rows_equal_truth_after_cleanup_except_recorded_defects(csv_run: Path, day: date) -> None:
    workers, _, truth_path = day_files(csv_run, day)
    truth = load_truth(truth_path)
    rows = read_rows(workers)
    defects = {d["line"]: d for d in truth.defects}
    assert len(rows) == truth.meta["rows"] == len(truth.workers) + Counter(
        d["defect"] for d in truth.defects)["duplicate_row"]
    seen: set[str] = set()
    for line, row in rows:
        pid = row["Employee_ID"]
        d = defects.get(line)
        if d and d["defect"] == "duplicate_row":
            assert pid in seen and d["person_id"] == pid
            continue
        assert pid not in seen, f"unrecorded duplicate {pid} at line {line}"
        seen.add(pid)
        expected = truth.workers[pid]
        assert expected["line"] == line
        skip = () if not d else (d["field"], "last_day_of_work") if d["defect"] == "termination_before_hire" \
            else (d["field"],)
        got = canonical(row, skip)
        assert got == {k: expected[k] for k in got}, f"line {line}"
    assert seen == set(truth.workers)


@pytest.mark.parametrize("day", [DAY1, DAY2])
def test_defects_are_where_recorded(csv_run: Path, day: date) -> None:
    workers, orgs, truth_path = day_files(csv_run, day)
    truth = load_truth(truth_path)
    lines = workers.read_bytes().split(b"\r\n")
    rows = dict(read_rows(workers))
    org_codes = {r["Org_Code"] for r in read_day_file(orgs)}
    assert {d["defect"] for d in truth.defects} == set(DEFECT_KINDS)
    per_person = Counter(d["person_id"] for d in truth.defects)
    assert max(per_person.values()) == 1          # one defect per person -> exact quarantine reasons
    for d in truth.defects:
        row = rows[d["line"]]
        assert row["Employee_ID"] == d["person_id"]
        value = row[W["columns"][d["field"]]]
        clean = truth.workers[d["person_id"]]
        kind = d["defect"]
        if kind == "bad_email":
            assert not EMAIL_RE.match(value.strip())
        elif kind == "bad_date":
            assert d["field"] in DATE_FIELDS
            with pytest.raises(ValueError):
                datetime.strptime(value, DATE_FMT)
        elif kind == "termination_before_hire":
            assert clean["employment_status"] == "terminated"
            assert datetime.strptime(value, DATE_FMT) < datetime.strptime(row["Hire_Date"], DATE_FMT)
        elif kind == "unknown_status":
            assert value not in W["value_maps"]["employment_status"]
        elif kind == "missing_manager":
            assert value == "" and clean["manager_person_id"] is not None
        elif kind == "unknown_org_code":
            assert value not in org_codes and value != clean["org_unit_code"]
        elif kind == "duplicate_row":
            assert lines[d["line"] - 1] == lines[d["line"] - 2]
        if kind in ROW_ERRORS | {"missing_manager", "unknown_org_code"}:
            assert canonical(row, (d["field"], "last_day_of_work"))["person_id"] == d["person_id"]
    managers = {w["manager_person_id"] for w in truth.workers.values()}
    assert not managers & set(per_person), "a unit manager carries a defect"


def test_cosmetic_noise_is_fixable(csv_run: Path) -> None:
    workers, _, truth_path = day_files(csv_run, DAY1)
    truth = load_truth(truth_path)
    rows = dict(read_rows(workers))
    assert {c["kind"] for c in truth.cosmetic} == {"whitespace", "case"}
    for c in truth.cosmetic:
        raw = rows[c["line"]][W["columns"][c["field"]]]
        fixed = raw.strip().lower() if c["kind"] == "case" else raw.strip()
        assert raw != fixed and fixed == truth.workers[c["person_id"]][c["field"]]
    assert not {c["person_id"] for c in truth.cosmetic} & {d["person_id"] for d in truth.defects}


# ---- population realism -------------------------------------------------------------------------------
def test_population_invariants(csv_run: Path) -> None:
    truth = load_truth(day_files(csv_run, DAY1)[2])
    people = list(truth.workers.values())
    assert len(people) == WORKERS
    assert all(re.fullmatch(r"P\d{7}", p["person_id"]) for p in people)
    assert all(p["employee_number"].isdigit() for p in people)
    usernames = [p["username"] for p in people]
    assert len(set(usernames)) == len(usernames) and all(re.fullmatch(r"[a-z]+\.[a-z]+\d*", u) for u in usernames)
    assert all(p["work_email"] == f"{p['username']}@example.com" for p in people)
    status = Counter(p["employment_status"] for p in people)
    assert status["active"] > 0.85 * WORKERS and status["leave"] and status["terminated"] and status["prehire"]
    etype = Counter(p["employment_type"] for p in people)
    assert etype["employee"] > 0.8 * WORKERS and etype["contractor"] and etype["intern"]
    by_id = truth.workers
    roots = [p for p in people if p["manager_person_id"] is None]
    assert len(roots) == 1
    for p in people:
        if p["manager_person_id"]:
            assert by_id[p["manager_person_id"]]["employment_status"] == "active"
        if p["employment_status"] == "prehire":
            assert p["start_date"] > ds(DAY1)
        if p["employment_status"] == "terminated":
            assert p["hire_date"] <= p["termination_date"] < ds(DAY1)
            assert p["last_day_of_work"] <= p["termination_date"]
    locs = {loc.code: loc for loc in LOCATIONS}
    for p in people:
        loc = locs[p["location_code"]]
        assert (p["country"], p["time_zone"]) == (loc.country, loc.time_zone)
        ZoneInfo(p["time_zone"])
    names = "".join(p["first_name"] + p["last_name"] for p in people)
    assert re.search(r"[^\x00-\x7f]", names), "expected non-ASCII names (é, ß, ø, 日本...)"


def test_org_tree(csv_run: Path) -> None:
    units = load_truth(day_files(csv_run, DAY1)[2]).org_units
    by_code = {u["org_unit_code"]: u for u in units}
    assert all(re.fullmatch(r"ORG\d{4,}", c) for c in by_code)
    assert [u for u in units if u["parent_org_unit_code"] is None] == [units[0]]

    def depth(code: str) -> int:
        parent = by_code[code]["parent_org_unit_code"]
        return 1 if parent is None else 1 + depth(parent)

    assert {depth(c) for c in by_code} <= {1, 2, 3, 4, 5} and max(depth(c) for c in by_code) >= 3
    assert any(" / " in u["name"] for u in units)
    file_rows = read_day_file(day_files(csv_run, DAY1)[1])
    assert [r["Org_Code"] for r in file_rows] == list(by_code)


# ---- day-to-day changes -------------------------------------------------------------------------------
def test_day_two_changes_show_in_the_snapshot(csv_run: Path) -> None:
    t1, t2 = (load_truth(day_files(csv_run, d)[2]) for d in (DAY1, DAY2))
    kinds = Counter(c["kind"] for c in t2.changes)
    assert {"hire", "terminate", "transfer", "rehire", "rename", "reorg"} <= set(kinds)
    assert set(t1.workers) < set(t2.workers), "terminated workers stay in the export"
    for c in t2.changes:
        kind, now = c["kind"], t2.workers.get(c.get("person_id", ""))
        before = t1.workers.get(c.get("person_id", ""))
        if kind == "hire":
            assert before is None
            assert now["employment_status"] == ("prehire" if c["start_date"] > ds(DAY2) else "active")
        elif kind == "terminate":
            assert now["termination_date"] == c["termination_date"]
            assert now["employment_status"] in (("active", "leave") if c["future"] else ("terminated",))
            assert (now["termination_date"] > ds(DAY2)) == c["future"]
        elif kind == "rehire":
            assert before["employment_status"] == "terminated"
            assert (now["employment_status"], now["hire_date"], now["termination_date"]) == ("active", ds(DAY2), None)
            assert now["employee_number"] == before["employee_number"]
        elif kind == "transfer":
            assert (before["org_unit_code"], now["org_unit_code"]) == (c["from_org_unit"], c["to_org_unit"])
            assert before["org_unit_code"] != now["org_unit_code"]
        elif kind == "rename":
            assert before["first_name"] == now["first_name"] and before["last_name"] != now["last_name"]
            assert now["username"] == c["new_username"] and now["work_email"] != before["work_email"]
        elif kind == "reorg":
            parents = {u["org_unit_code"]: u["parent_org_unit_code"] for u in t2.org_units}
            assert parents[c["org_unit_code"]] == c["new_parent"] != c["old_parent"]


def test_scheduled_changes_take_effect(tmp_path: Path) -> None:
    hr = SyntheticHR(3000, START, seed=11, messiness=Messiness.clean())
    last = START + timedelta(days=10)
    truth = load_truth(hr.write_day(tmp_path, last).truth_path)
    changes = [(day, c) for day, cs in sorted(hr.changes.items()) for c in cs]
    later_rehires = {c["person_id"]: day for day, c in changes if c["kind"] == "rehire"}
    started = [c["person_id"] for _, c in changes if c["kind"] == "start"]
    ended = [(day, c["person_id"]) for day, c in changes if c["kind"] == "terminate_effective"]
    assert started and ended
    assert all(truth.workers[p]["employment_status"] != "prehire" for p in started)
    for day, pid in ended:
        if later_rehires.get(pid, day) <= day:
            assert truth.workers[pid]["employment_status"] == "terminated"
            assert truth.workers[pid]["termination_date"] < ds(day)


def test_cannot_go_back_in_time() -> None:
    hr = SyntheticHR(200, START, seed=1)
    hr.advance(DAY2)
    with pytest.raises(ValueError):
        hr.render(DAY1)


# ---- file options -------------------------------------------------------------------------------------
def test_bom_and_crlf_on_by_default_and_optional(csv_run: Path, plain_run: Path) -> None:
    messy = day_files(csv_run, DAY1)[0].read_bytes()
    plain = day_files(plain_run, DAY1)[0].read_bytes()
    assert messy.startswith(b"\xef\xbb\xbf") and messy.count(b"\r\n") == messy.count(b"\n")
    assert not plain.startswith(b"\xef\xbb\xbf") and b"\r" not in plain
    assert messy[3:].replace(b"\r\n", b"\n") == plain


def test_clean_messiness_has_no_defects(tmp_path: Path) -> None:
    day = SyntheticHR(300, START, seed=3, messiness=Messiness.clean()).write_day(tmp_path)
    truth = load_truth(day.truth_path)
    assert truth.defects == [] and truth.cosmetic == [] and day.rows == day.persons == 300
    assert Messiness.scaled(0.01).bad_email == 0.01 == Messiness.scaled(0.01).whitespace


def test_jsonl_variant_matches_csv(csv_run: Path, jsonl_run: Path) -> None:
    for day in (DAY1, DAY2):
        from_csv = read_day_file(day_files(csv_run, day)[0])
        from_jsonl = read_day_file(day_files(jsonl_run, day, "jsonl")[0])
        assert from_jsonl == from_csv
        assert all(v is None or isinstance(v, str) for r in from_jsonl for v in r.values())
        t_csv, t_jsonl = (load_truth(day_files(run, day)[2]) for run in (csv_run, jsonl_run))
        assert t_jsonl.workers.keys() == t_csv.workers.keys()
        assert [{**d, "line": d["line"] + 1} for d in t_jsonl.defects] == t_csv.defects
        assert read_day_file(day_files(jsonl_run, day, "jsonl")[1]) == read_day_file(day_files(csv_run, day)[1])
