from pathlib import Path

import pytest

from hrlms.settings import DEFAULT_MAPPING
from hrlms.sources.mapping import WORKER_FIELDS, MappingError, load_mapping, strftime_to_pg


def test_shipped_mapping_loads_and_covers_the_canonical_worker():
    m = load_mapping(DEFAULT_MAPPING)
    workers = m.entity("workers")
    assert set(WORKER_FIELDS) - set(workers.columns) == {
        "secondary_manager_person_ids", "temporary_manager_person_id", "temporary_manager_from",
        "temporary_manager_until"}
    assert workers.pg_date_format == "MM/DD/YYYY"
    assert workers.value_maps["employment_status"]["T"] == "terminated"
    assert "person_id" in workers.required
    assert m.entity("org_units").columns["org_unit_code"] == "Org_Code"


@pytest.mark.parametrize("fmt, pg", [("%Y-%m-%d", "YYYY-MM-DD"), ("%d.%m.%Y", "DD.MM.YYYY"), ("%d %b %Y", "DD Mon YYYY")])
def test_date_formats_translate_to_postgres(fmt, pg):
    assert strftime_to_pg(fmt) == pg


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("body, needle", [
    ("entities: {workers: {columns: {person_idd: X}}}", "entities.workers.columns.person_idd: not a canonical field"),
    ("entities: {workers: {columns: {person_id: X}, format: xml}}", "entities.workers.format"),
    ("entities: {workers: {columns: {person_id: X}, date_format: '%Q'}}", "entities.workers.date_format"),
    ("entities: {workers: {columns: {person_id: X, first_name: X}}}", "mapped twice"),
    ("entities: {workers: {columns: {person_id: X}, required: [work_email]}}", "entities.workers.required: 'work_email'"),
    ("entities: {workers: {columns: {person_id: X}, file_pattern: 'w.csv'}}", "file_pattern: must contain {ds}"),
    ("entities: {workers: {columns: {person_id: X}, colums: {}}}", "unknown key(s) ['colums']"),
    ("entities: {teams: {columns: {a: b}}}", "entities.teams: unknown entity"),
    ("nope: [", "not valid YAML"),
])
def test_bad_mappings_name_file_and_key(tmp_path, body, needle):
    path = _write(tmp_path, body)
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)
