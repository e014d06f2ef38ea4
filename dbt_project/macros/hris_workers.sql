{#- The parse of HR worker lines, shared by stg_hris__workers (every snapshot, a view) and
    stg_hris__snapshot_workers (the run's snapshot, a table that parses only the lines it cannot carry over
    from the snapshot it held before). -#}

{% macro hris_worker_columns() -%}
    {#- The columns of both models, in order. copy_no is not parsed: 1 for the first copy of an exactly
        duplicated line, 2+ for the others, numbered by each model. -#}
    {{- return([
        'snapshot_id', 'line_no', 'person_id', 'employee_number', 'manager_person_id',
        'secondary_manager_person_ids', 'temporary_manager_person_id', 'first_name', 'last_name',
        'preferred_name', 'work_email', 'username', 'employment_status', 'employment_type', 'hire_date',
        'start_date', 'termination_date', 'last_day_of_work', 'hire_date_raw', 'start_date_raw',
        'termination_date_raw', 'last_day_of_work_raw', 'temporary_manager_from', 'temporary_manager_until',
        'temporary_manager_from_raw', 'temporary_manager_until_raw', 'job_code', 'job_title', 'job_family',
        'org_unit_code', 'location_code', 'country', 'time_zone', 'row_hash', 'copy_no',
        'unparseable_date_field'
    ]) -}}
{%- endmacro %}

{% macro hris_worker_row_hash(relation=none) -%}
    {#- A line's content as HR sent it (raw text): exact copies share it, and any other difference tells lines
        apart — a row's text form quotes values and keeps empty fields in their places (concat_ws would give
        'a', null, 'b' and 'a', 'b', null the same hash). The same hash as a line's in the change set's
        person hashes (hrlms.warehouse.changes._RAW_COLUMNS: same columns, same order). -#}
md5(row({% for c in ['person_id', 'employee_number', 'first_name', 'last_name', 'preferred_name',
    'work_email', 'username', 'employment_status', 'employment_type', 'hire_date', 'start_date',
    'termination_date', 'last_day_of_work', 'job_code', 'job_title', 'job_family', 'org_unit_code',
    'manager_person_id', 'location_code', 'country', 'time_zone', 'secondary_manager_person_ids',
    'temporary_manager_person_id', 'temporary_manager_from', 'temporary_manager_until'] -%}
    {{ relation ~ '.' if relation }}{{ c }}{{ ', ' if not loop.last }}{% endfor %})::text)
{%- endmacro %}

{% macro hris_worker_parse_ctes(snapshot_filter='', copy_no=none) -%}
    {#- CTEs `hints`, `trimmed`, `typed` and `flagged` (the columns, copy_no when given) over a CTE named `source`
        of raw_hris.workers rows. Parsing follows the hints the mapping stored with the snapshot (date
        format, value maps), so a new export format needs no SQL change. `snapshot_filter`: SQL appended
        to the hints' where clause (" and snapshot_id = 3"); `copy_no`: a column of `source` passed through
        as copy_no. -#}
hints as (
    select snapshot_id, hints from {{ source('hris', 'snapshots') }} where entity = 'workers'{{ snapshot_filter }}
),

trimmed as (
    select
        source._snapshot_id as snapshot_id,
        source._line_no as line_no,{% if copy_no %}
        source.{{ copy_no }} as copy_no,{% endif %}
        nullif(btrim(person_id), '') as person_id,
        nullif(btrim(employee_number), '') as employee_number,
        nullif(regexp_replace(btrim(first_name), '\s+', ' ', 'g'), '') as first_name,
        nullif(regexp_replace(btrim(last_name), '\s+', ' ', 'g'), '') as last_name,
        nullif(regexp_replace(btrim(preferred_name), '\s+', ' ', 'g'), '') as preferred_name,
        nullif(lower(btrim(work_email)), '') as work_email,
        nullif(lower(btrim(username)), '') as username,
        nullif(btrim(employment_status), '') as employment_status_raw,
        nullif(btrim(employment_type), '') as employment_type_raw,
        nullif(btrim(hire_date), '') as hire_date_raw,
        nullif(btrim(start_date), '') as start_date_raw,
        nullif(btrim(termination_date), '') as termination_date_raw,
        nullif(btrim(last_day_of_work), '') as last_day_of_work_raw,
        nullif(btrim(job_code), '') as job_code,
        nullif(btrim(job_title), '') as job_title,
        nullif(btrim(job_family), '') as job_family,
        nullif(upper(btrim(org_unit_code)), '') as org_unit_code,
        nullif(btrim(manager_person_id), '') as manager_person_id,
        -- optional: matrix managers as one ';'-separated list (blanks around separators removed),
        -- a temporary manager and the dates it applies
        nullif(btrim(regexp_replace(secondary_manager_person_ids, '\s*;\s*', ';', 'g'), '; '), '')
            as secondary_manager_person_ids,
        nullif(btrim(temporary_manager_person_id), '') as temporary_manager_person_id,
        nullif(btrim(temporary_manager_from), '') as temporary_manager_from_raw,
        nullif(btrim(temporary_manager_until), '') as temporary_manager_until_raw,
        nullif(btrim(location_code), '') as location_code,
        nullif(upper(btrim(country)), '') as country,
        nullif(btrim(time_zone), '') as time_zone,
        {{ hris_worker_row_hash('source') }} as row_hash,
        hints.hints
    from source
    inner join hints on source._snapshot_id = hints.snapshot_id
),

typed as (
    select
        -- ids
        snapshot_id,
        line_no,{% if copy_no %}
        copy_no,{% endif %}
        person_id,
        employee_number,
        manager_person_id,
        secondary_manager_person_ids,
        temporary_manager_person_id,
        -- person
        first_name,
        last_name,
        preferred_name,
        work_email,
        username,
        -- employment
        lower(coalesce(hints -> 'value_maps' -> 'employment_status' ->> employment_status_raw,
            employment_status_raw)) as employment_status,
        lower(coalesce(hints -> 'value_maps' -> 'employment_type' ->> employment_type_raw,
            employment_type_raw)) as employment_type,
        -- dates (raw text kept so the gate can tell "missing" from "unparseable")
        {{ parse_date('hire_date_raw', "hints ->> 'date_format'") }} as hire_date,
        {{ parse_date('start_date_raw', "hints ->> 'date_format'") }} as start_date,
        {{ parse_date('termination_date_raw', "hints ->> 'date_format'") }} as termination_date,
        {{ parse_date('last_day_of_work_raw', "hints ->> 'date_format'") }} as last_day_of_work,
        hire_date_raw,
        start_date_raw,
        termination_date_raw,
        last_day_of_work_raw,
        {{ parse_date('temporary_manager_from_raw', "hints ->> 'date_format'") }} as temporary_manager_from,
        {{ parse_date('temporary_manager_until_raw', "hints ->> 'date_format'") }} as temporary_manager_until,
        temporary_manager_from_raw,
        temporary_manager_until_raw,
        -- job and place
        job_code,
        job_title,
        job_family,
        org_unit_code,
        location_code,
        country,
        time_zone,
        -- row identity within the snapshot: exact duplicates share a hash
        row_hash
    from trimmed
    -- offset 0: a fence, so `flagged` reads the parsed dates instead of parsing every date a second time
    offset 0
),

flagged as (
    select
        *,
        case
            when hire_date_raw is not null and hire_date is null then 'hire_date'
            when start_date_raw is not null and start_date is null then 'start_date'
            when termination_date_raw is not null and termination_date is null then 'termination_date'
            when last_day_of_work_raw is not null and last_day_of_work is null then 'last_day_of_work'
            when temporary_manager_from_raw is not null and temporary_manager_from is null
                then 'temporary_manager_from'
            when temporary_manager_until_raw is not null and temporary_manager_until is null
                then 'temporary_manager_until'
        end as unparseable_date_field
    from typed
)
{%- endmacro %}

{% macro hris_worker_parse(snapshot_id=none) -%}
    {#- The parse of raw_hris.workers lines as a query (stg_hris__workers: every snapshot's; with `snapshot_id`,
        that snapshot's lines only — a filter on the view does not reach its source past the parse's fence),
        copy_no numbering the exact copies of a line in file order. -#}
with source as (
    select * from {{ source('hris', 'workers') }}{% if snapshot_id is not none %} where _snapshot_id = {{ snapshot_id }}{% endif %}
),

{{ hris_worker_parse_ctes('' if snapshot_id is none else ' and snapshot_id = ' ~ snapshot_id) }}

select
{%- for c in hris_worker_columns() %}
    {% if c == 'copy_no' -%}
    row_number() over (partition by snapshot_id, person_id, row_hash order by line_no) as copy_no
    {%- else %}{{ c }}{% endif %}{{ ',' if not loop.last }}
{%- endfor %}
from flagged
{%- endmacro %}

{% macro hris_line_carry_relation() -%}
    {#- hrlms.transform.dbt.LINE_CARRY_TABLE -#}
    {{- this.schema }}.stg_hris__snapshot_line_carry
{%- endmacro %}

{% macro hris_line_carry_by_number_relation() -%}
    {#- hrlms.transform.dbt.LINE_CARRY_BY_NUMBER_TABLE: when the parsed rows are changed in place
        (hris_line_carry_delta), one row (snapshot_id, from_snapshot_id, below_line_no, lines) standing for the
        carry's rows of the file lines: every line of the snapshot numbered below below_line_no (`lines` of them)
        is the line of the same number of from_snapshot_id, kept where it is in the parsed rows. -#}
    {{- this.schema }}.stg_hris__snapshot_line_carry_by_number
{%- endmacro %}

{% macro hris_line_carry() -%}
    {#- stg_hris__snapshot_workers' pre-hook: one row per line of the run's snapshot (on an event run that changes
        the parsed rows in place, per event line, and one row for the file's lines: hris_line_carry_delta) in
        stg_hris__snapshot_line_carry — its row hash, its copy number, and (from_snapshot_id, from_line_no) the
        line of the snapshot the table still holds that has the same content, when that one was parsed with
        the same hints and the staging stage allows carrying (run parameter staging_carry: the dbt project is
        the one that parsed it). The model copies those parsed rows instead of parsing the line again; the
        quality gate carries their row verdicts (hrlms.quality.gate). Runs in the model's transaction, while
        the table still holds the earlier snapshot. When nothing may be carried it only empties the table:
        the model parses every line (and numbers the copies itself), the gate checks every line and the
        change set hashes the people. -#}
    {%- set sid = run_param('snapshot_id') | int -%}
    {%- set carry = hris_line_carry_relation() -%}
    {%- set held = run_param('staging_carry') | int == 1 and
        adapter.get_relation(database=this.database, schema=this.schema, identifier=this.identifier) is not none -%}
    {%- set delta = run_param('staging_delta') | int -%}
create unlogged table if not exists {{ carry }} (
    snapshot_id bigint not null, line_no bigint not null, row_hash text not null, copy_no bigint not null,
    from_snapshot_id bigint, from_line_no bigint);
create unlogged table if not exists {{ hris_line_carry_by_number_relation() }} (
    snapshot_id bigint not null, from_snapshot_id bigint not null, below_line_no bigint not null,
    lines bigint not null);
truncate {{ carry }}, {{ hris_line_carry_by_number_relation() }};
{%- if held and delta > 0 %}
{{ hris_line_carry_delta(sid, delta) }}
{%- elif held %}
-- hash joins only: the copies (almost always none) are estimated at a third of the lines, and a merge join
-- with them sorted all the lines (1M) by line number
set local enable_mergejoin = off;
insert into {{ carry }} (snapshot_id, line_no, row_hash, copy_no, from_snapshot_id, from_line_no)
with {{ hris_line_hashes(sid) }},

held as (
    -- the first copy of each line the table holds, when its snapshot has the same parsing hints
    select h.snapshot_id, h.line_no, h.row_hash
    from {{ this }} as h
    where h.copy_no = 1
      and (select hints from {{ source('hris', 'snapshots') }} where snapshot_id = {{ sid }})
          is not distinct from (select hints from {{ source('hris', 'snapshots') }}
                                where snapshot_id = (select snapshot_id from {{ this }} limit 1))
)

select {{ sid }}, lines.line_no, lines.row_hash, coalesce(copies.copy_no, 1), held.snapshot_id, held.line_no
from lines
left join copies on copies.line_no = lines.line_no
left join held on held.row_hash = lines.row_hash;
reset enable_mergejoin;
-- For the model's query (this transaction): statistics of the carry, so that the lines to parse (a few thousand)
-- are hashed rather than the whole raw snapshot; and a hash of the carry rather than of the wide parsed rows it
-- copies (1M workers: 300 MB), which the planner would otherwise choose as they fit in work_mem. With both the
-- query took 2.6 s instead of 6 s (the model's post-hook resets them).
analyze {{ carry }};
set local work_mem = '100MB';
set local hash_mem_multiplier = 1
{%- endif %}
{%- endmacro %}

{% macro hris_line_hashes(sid, line_filter='') -%}
    {#- CTEs `lines` (line_no, row_hash: the snapshot's lines, `line_filter` appended to their where clause) and
        `copies` (line_no, copy_no of the lines that are exact copies of another), for the line carries. -#}
lines as materialized (
    -- (sources unaliased: `dbt build --empty` turns them into subqueries with an alias of their own)
    select _line_no as line_no, {{ hris_worker_row_hash() }} as row_hash
    from {{ source('hris', 'workers') }}
    where _snapshot_id = {{ sid }}{{ line_filter }}
),

copies as (
    -- exact copies of a line (same content, so the same person): numbered in file order
    select line_no, row_number() over (partition by row_hash order by line_no) as copy_no
    from lines
    where row_hash in (select row_hash from lines group by row_hash having count(*) > 1)
)
{%- endmacro %}

{% macro hris_line_carry_delta(sid, held_sid) -%}
    {#- hris_line_carry for an event-built snapshot whose file is the file of the snapshot the table holds
        (hrlms.transform.dbt.staging_delta checked it: the run parameter staging_delta names the held snapshot).
        Both are that file's lines, at the file's line numbers, except the lines of people events changed,
        which come after the file's last line (hrlms.sources.events.overlay); the held snapshot's event people
        are among this one's. So every file line of a person no event changed is the held line of the same
        number — carried without hashing the million lines — and only the event lines are hashed and compared
        with the held event lines. The same rows as the hashing carry.
        In place (hris_parsed_in_place), those file lines stay where they are in the parsed rows: the carry has
        rows for the event lines only, and one row in hris_line_carry_by_number_relation() for the others (at 1M
        workers, writing and counting a carry row per file line took ~1 s of each event run). The
        materialization checks that the rows then hold every line once. -#}
{%- set in_place = hris_parsed_in_place() %}
insert into {{ hris_line_carry_relation() }} (snapshot_id, line_no, row_hash, copy_no, from_snapshot_id, from_line_no)
-- this snapshot's event lines follow the file's last line; their people are every person an event changed
with event_lines as materialized (
    select line_no, person_id, file_line_no from {{ source('hris', 'hr_event_lines') }} where snapshot_id = {{ sid }}
),

{{ hris_line_hashes(sid, ' and _line_no >= (select min(line_no) from event_lines)') }},

held as (
    -- the first copy of each held line of those people (event lines, or file lines an event now repeats)
    select h.snapshot_id, h.line_no, h.row_hash
    from {{ this }} as h
    where h.copy_no = 1
    {%- if in_place %}
      -- by number (the rows' line index): the held event lines, and the file lines the event lines replace
      and h.line_no = any(array(select r.line_no from {{ hris_parsed_rows_relation() }} as r
                                where r.line_no >= (select min(line_no) from event_lines)
                                union all
                                select file_line_no from event_lines))
    {%- else %}
      and (h.line_no >= (select min(line_no) from event_lines) or h.person_id in (select person_id from event_lines))
    {%- endif %}
)

{%- if not in_place %}
-- (`not in` with a subquery: a hashed lookup per row; `<> all(array)` compared every row with every person)
select {{ sid }}, h.line_no, h.row_hash, h.copy_no, h.snapshot_id, h.line_no
from {{ this }} as h
where h.line_no < (select min(line_no) from event_lines)
  and (h.person_id is null or h.person_id not in (select person_id from event_lines))
union all
{%- endif %}
select {{ sid }}, lines.line_no, lines.row_hash, coalesce(copies.copy_no, 1), held.snapshot_id, held.line_no
from lines
left join copies on copies.line_no = lines.line_no
left join held on held.row_hash = lines.row_hash;
{%- if in_place %}
insert into {{ hris_line_carry_by_number_relation() }} (snapshot_id, from_snapshot_id, below_line_no, lines)
select {{ sid }}, {{ held_sid }}, {{ hris_first_event_line(sid) }},
       (select row_count from {{ source('hris', 'snapshots') }} where snapshot_id = {{ sid }})
       - (select count(*) from {{ hris_line_carry_relation() }});
{%- else %}
-- a line the carry missed or repeated would be lost or doubled in the parsed table: refuse instead
do $$ begin
    if (select count(*) from {{ hris_line_carry_relation() }}) <> (select row_count from {{ source('hris', 'snapshots') }}
                                               where snapshot_id = {{ sid }}) then
        raise exception 'stg_hris__snapshot_line_carry: the delta carry of snapshot {{ sid }} from {{ held_sid }} does not cover its lines once each';
    end if;
end $$;
{%- endif %}
analyze {{ hris_line_carry_relation() }};
set local work_mem = '100MB';
set local hash_mem_multiplier = 1
{%- endmacro %}
