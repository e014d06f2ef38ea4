{#- stg_hris__snapshot_workers: the run's workers snapshot, parsed. The rows live in an unlogged table
    (stg_hris__snapshot_workers_rows); the model is a view over it that names the snapshot they are, so a run
    whose snapshot differs from the held one by a few lines changes those lines in place instead of writing a
    million rows again. The snapshot id is in the view, not on the rows: rows kept from the held snapshot need
    no update (their column parsed_for_snapshot_id says which snapshot they were written for). -#}

{% macro hris_parsed_rows_relation() -%}
    {{- return(api.Relation.create(database=this.database, schema=this.schema,
                                   identifier=this.identifier ~ '_rows', type='table')) -}}
{%- endmacro %}

{% macro hris_parsed_in_place() -%}
    {#- True when the run changes the held rows in place: the staging stage allows carrying and found the
        run's snapshot to be built from the held one's file by events (run parameter staging_delta,
        hrlms.transform.dbt.staging_delta), and the held rows are this materialization's. The model's SQL then
        selects the event lines only (the pre-hook macros/hris_workers.sql#hris_line_carry_delta carried every
        other line by its number). -#}
    {%- set held = adapter.get_relation(database=this.database, schema=this.schema, identifier=this.identifier) -%}
    {%- set rows = adapter.get_relation(database=this.database, schema=this.schema,
                                        identifier=this.identifier ~ '_rows') -%}
    {%- if not (run_param('staging_carry') | int == 1 and run_param('staging_delta') | int > 0
                and held is not none and held.is_view and rows is not none) -%}
        {{- return(false) -}}
    {%- endif -%}
    {#- the rows of the events' people are found by the file lines their event lines replace (kept since
        hr_event_lines.file_line_no exists) -#}
    {%- set unknown = run_query("select count(*) from " ~ source('hris', 'hr_event_lines') ~ " where snapshot_id = "
                                ~ (run_param('snapshot_id') | int) ~ " and file_line_no is null").columns[0].values()[0] -%}
    {{- return(unknown == 0) -}}
{%- endmacro %}

{% macro hris_first_event_line(sid) -%}
    {#- The first event line of an event-built snapshot: every line before it is a file line (hrlms.sources.events). -#}
(select min(line_no) from {{ source('hris', 'hr_event_lines') }} where snapshot_id = {{ sid }})
{%- endmacro %}

{% macro hris_parsed_view_sql(view, rows) -%}
create or replace view {{ view }} as
select cast({{ run_param('snapshot_id') | int }} as bigint) as snapshot_id
{%- for c in hris_worker_columns() if c != 'snapshot_id' %}, r.{{ c }}{% endfor %}
from {{ rows }} as r
{%- endmacro %}

{% materialization hris_parsed_snapshot, adapter='postgres' %}
    {#- In place (hris_parsed_in_place): the held rows of people events changed and the held event lines are
        deleted, the model's rows (the run's event lines, parsed or carried by content) inserted, and the view
        names the run's snapshot. Otherwise the model's rows (every line, parsed or carried) are written to a
        new table that replaces the rows table, and the view is made again over it (a table of that name from
        before this materialization is dropped). One transaction either way, the pre-hook's line carry
        included: a crash leaves the held snapshot as it was. -#}
    {%- set target_relation = this.incorporate(type='view') -%}
    {%- set rows_relation = hris_parsed_rows_relation() -%}
    {%- set in_place = hris_parsed_in_place() -%}
    {%- set new_rows = make_intermediate_relation(rows_relation) -%}
    {%- set sid = run_param('snapshot_id') | int -%}

    {{ drop_relation_if_exists(adapter.get_relation(database=new_rows.database, schema=new_rows.schema,
                                                    identifier=new_rows.identifier)) }}
    {{ run_hooks(pre_hooks, inside_transaction=False) }}
    {{ run_hooks(pre_hooks, inside_transaction=True) }}

    {%- if in_place %}
    {% call statement('main') -%}
        create temporary table hris_parsed_lines on commit drop as
        {{ sql }};
        create temporary table hris_parsed_counts on commit drop as
        with gone as (
            -- what the carry did not keep by number: the held event lines, and the file lines of the events'
            -- people (by the line index: the numbers the event lines replace; an array, which the planner looks
            -- up by index where it would hash-join a subquery with all the rows)
            delete from {{ rows_relation }}
            where line_no = any(array(
                select line_no from {{ rows_relation }}
                where line_no >= {{ hris_first_event_line(sid) }}
                union all
                select file_line_no from {{ source('hris', 'hr_event_lines') }} where snapshot_id = {{ sid }}))
            returning 1
        ),

        added as (
            insert into {{ rows_relation }} select * from hris_parsed_lines returning 1
        )

        select (select count(*) from gone) as gone, (select count(*) from added) as added;
        -- a line the carry missed or repeated would be lost or doubled: the rows held the held snapshot's lines,
        -- less the ones gone and with the ones added they must be this snapshot's lines, each once
        do $hrlms$ begin
            if (select h.row_count - c.gone + c.added from hris_parsed_counts c, {{ source('hris', 'snapshots') }} h
                where h.snapshot_id = {{ run_param('staging_delta') | int }})
               is distinct from (select row_count from {{ source('hris', 'snapshots') }} where snapshot_id = {{ sid }})
            then
                raise exception 'stg_hris__snapshot_workers: the rows changed in place for snapshot {{ sid }} from {{ run_param('staging_delta') | int }} do not hold its lines once each';
            end if;
        end $hrlms$;
        {{ hris_parsed_view_sql(target_relation, rows_relation) }}
    {%- endcall %}
    {%- else %}
    {% call statement('main') -%}
        create unlogged table {{ new_rows }} as
        {{ sql }};
        alter table {{ new_rows }} rename column snapshot_id to parsed_for_snapshot_id;
        -- the few lines a run changes or checks are looked up by number or person (the gate, the change set, in
        -- place); the copies are rare
        create index on {{ new_rows }} (line_no);
        create index on {{ new_rows }} (person_id);
        create index on {{ new_rows }} (line_no) where copy_no <> 1
    {%- endcall %}
    {#- the held relation: this view (over the old rows), or a table of the model's name from before -#}
    {{ drop_relation_if_exists(adapter.get_relation(database=this.database, schema=this.schema,
                                                    identifier=this.identifier)) }}
    {{ drop_relation_if_exists(adapter.get_relation(database=rows_relation.database, schema=rows_relation.schema,
                                                    identifier=rows_relation.identifier)) }}
    {{ adapter.rename_relation(new_rows, rows_relation) }}
    {% call statement('view') -%}
        {{ hris_parsed_view_sql(target_relation, rows_relation) }};
        analyze {{ rows_relation }}
    {%- endcall %}
    {%- endif %}

    {{ run_hooks(post_hooks, inside_transaction=True) }}
    {{ adapter.commit() }}
    {{ run_hooks(post_hooks, inside_transaction=False) }}
    {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
