{#- int_org_units_headed kept by difference (issue 15). A unit's head depends on the unit's HR manager and that
    person's activity, and on the managers its own active workers name and theirs. On the org snapshot whose
    units the table last judged (int_org_units_resolved not rebuilt since: macros/relations_read.sql), an
    incremental build judges again only the units one of the change set's people is placed in now or was before
    (audit.placed_units_before, int_workers_placed's pre-hook) and the units HR says one of them manages: a
    worker who moves, starts, leaves or names another manager is a changed person, and so are the reports of a
    manager who starts or leaves (the change set's manager chain). Any other build judges every unit. -#}

{% macro org_units_headed_every_unit() -%}
    {{- return(not (is_incremental() and change_set_id() > 0
                    and relation_unchanged_now('int_org_units_headed', ref('int_org_units_resolved')))) -}}
{%- endmacro %}

{% macro placed_units_before() -%}
    {#- int_workers_placed's pre-hook (before delete_changed_people): the units its change set's people are placed
        in as the last build left them (audit.placed_units_before), for int_org_units_headed. -#}
    {%- if is_incremental() and change_set_id() > 0 -%}
        insert into {{ audit_table('placed_units_before') }} (change_set_id, org_unit_code)
        select distinct {{ change_set_id() }}, org_unit_code from {{ this }}
        where {{ changed_people_lookup('person_id') }} and org_unit_code is not null
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{% macro org_units_headed_touched() -%}
    {#- A query of org_unit_code: the units whose head an incremental build judges again. -#}
    select org_unit_code from {{ audit_table('placed_units_before') }}
    union
    select org_unit_code from {{ ref('int_workers_placed') }} where {{ changed_people_lookup('person_id') }}
    union
    select org_unit_code from {{ ref('int_org_units_resolved') }} where manager_person_id in {{ changed_people() }}
{%- endmacro %}

{% macro org_units_headed_prepare() -%}
    {#- The model's pre-hook: hash joins only (the planner badly underestimates the placed workers' joins, and a
        nested loop over a few thousand changed units it takes for one is quadratic); an incremental build first
        deletes the rows it writes again. -#}
    set local enable_nestloop = off
    {%- if is_incremental() %};
    delete from {{ this }}
    {%- if not org_units_headed_every_unit() %} where org_unit_code in ({{ org_units_headed_touched() }}){% endif %}
    {%- endif -%}
{%- endmacro %}
