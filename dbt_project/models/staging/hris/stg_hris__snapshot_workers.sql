{{ config(
    materialized='hris_parsed_snapshot',
    pre_hook="{{ hris_line_carry() }}",
    post_hook=["reset work_mem", "reset hash_mem_multiplier"]
) }}
-- The typed rows of this run's workers snapshot, parsed once per run by the staging stage. The quality
-- gate and the intermediate models read this table: at 1M workers each query over the staging view
-- re-parses the snapshot (~40 s), and the gate alone sends about ten. Unlogged: it is rebuilt from
-- raw_hris on every run, so nothing is lost if a crash empties it (the next staging stage refills it).
-- Materialized as a view naming the snapshot over the rows table stg_hris__snapshot_workers_rows
-- (macros/parsed_snapshot.sql): an event run's snapshot changes the few rows of its events' people in place.
-- hrlms.transform.dbt.check_staged refuses a gate or transform whose snapshot is not the one in here.
--
-- A day's snapshot repeats most of the day before's lines: a line with the same content as one of the
-- snapshot the table holds (parsed with the same hints, by the same project) is copied from it, and only the
-- others are parsed (the pre-hook macros/hris_workers.sql#hris_line_carry says which). The rows are the
-- same as parsing every line: the parse of a line depends only on its text and the snapshot's hints.
{%- set sid = run_param('snapshot_id') | int %}
{#- carried rows come from the table as it stands, before this build replaces it -#}
{%- set held = run_param('staging_carry') | int == 1 and
    adapter.get_relation(database=this.database, schema=this.schema, identifier=this.identifier) is not none %}
{%- if held %}
with carry as not materialized (
    -- read twice, inlined: each use is planned with the carry's statistics (the pre-hook's analyze)
    select line_no, copy_no, from_snapshot_id, from_line_no
    from {{ hris_line_carry_relation() }}
    where snapshot_id = {{ sid }}
    {%- if hris_parsed_in_place() %}
      -- in place: the event lines only (every line before them stays where it is)
      and line_no >= {{ hris_first_event_line(sid) }}
    {%- endif %}
),

snapshot_lines as (
    select * from {{ source('hris', 'workers') }} where _snapshot_id = {{ sid }}
    {%- if hris_parsed_in_place() %}
      -- the event lines (by the raw lines' index)
      and _line_no >= {{ hris_first_event_line(sid) }}
    {%- endif %}
),

source as (
    -- the lines to parse
    select snapshot_lines.*, carry.copy_no as _copy_no
    from snapshot_lines
    inner join carry on carry.line_no = snapshot_lines._line_no and carry.from_line_no is null
),

{{ hris_worker_parse_ctes(' and snapshot_id = ' ~ sid, copy_no='_copy_no') }},

parsed as (
    select {{ hris_worker_columns() | join(', ') }} from flagged
),

carried as (
    select
    {%- for c in hris_worker_columns() %}
        {% if c == 'snapshot_id' %}cast({{ sid }} as bigint) as snapshot_id
        {%- elif c in ('line_no', 'copy_no') %}carry.{{ c }}
        {%- else %}held.{{ c }}{% endif %}{{ ',' if not loop.last }}
    {%- endfor %}
    from carry
    inner join {{ this }} as held on held.snapshot_id = carry.from_snapshot_id and held.line_no = carry.from_line_no
)

select * from parsed
union all
select * from carried
{%- else %}
-- every line parsed (the first build, another dbt project, HRLMS_REBUILD=always, dbt by hand): the staging
-- view's rows of the snapshot, by the view's own parse of this snapshot's lines only (the fence in the parse
-- keeps a filter on the view from reaching its source: it would parse the lines of every snapshot landed)
-- depends_on: {{ ref('stg_hris__workers') }}
{{ hris_worker_parse(sid) }}
{%- endif %}
