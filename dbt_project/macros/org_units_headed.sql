{#- int_org_units_headed kept by difference (issue 15). A unit's head depends on the unit's HR manager and that
    person's activity, and on the managers its own active workers name and theirs. An incremental build judges
    again only the units one of the change set's people is placed in now or was before
    (audit.placed_units_before, int_workers_placed's pre-hook) and the units HR says one of them manages: a
    worker who moves, starts, leaves or names another manager is a changed person, and so are the reports of a
    manager who starts or leaves (the change set's manager chain). On another org snapshot than the one whose
    units the table last judged (int_org_units_resolved rebuilt since: macros/relations_read.sql) also the units
    whose HR manager is not the one the table judged with, and the new ones; the units gone are deleted (a
    unit's parent, name or type do not decide its head; its workers moved by an org change are changed people).
    Any other build judges every unit. (1M workers, a day's org file: every unit, 3.2 s.) -#}

{% macro org_units_headed_every_unit() -%}
    {{- return(not (is_incremental() and change_set_id() > 0)) -}}
{%- endmacro %}

{% macro org_units_headed_same_org() -%}
    {#- int_org_units_resolved is the build the table last judged (asked once per build). -#}
    {{- return(relation_unchanged_now('int_org_units_headed', ref('int_org_units_resolved'))) -}}
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
    {%- if not org_units_headed_same_org() %}
    union
    select units.org_unit_code from {{ ref('int_org_units_resolved') }} as units
    left join {{ this }} as judged on units.org_unit_code = judged.org_unit_code
    where judged.org_unit_code is null or units.manager_person_id is distinct from judged.hr_manager_person_id
    union
    select judged.org_unit_code from {{ this }} as judged
    where not exists (select from {{ ref('int_org_units_resolved') }} as units
                      where units.org_unit_code = judged.org_unit_code)
    {%- endif %}
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

{% macro org_unit_tree_prune() -%}
    {#- org_unit_tree's pre-hook: the units the run's resolved tree no longer has (another org file). -#}
    {%- if is_incremental() -%}
        delete from {{ this }} as built
        where not exists (select 1 from {{ ref('int_org_units_resolved') }} as units
                          where units.org_unit_code = built.org_unit_code)
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
