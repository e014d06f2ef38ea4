-- The head of each resolved org unit, for the org-chain manager fallback:
--   1. the unit's manager_person_id from HR (org_unit_manager) when that person is an active worker;
--   2. else the active worker most often named as (primary) manager by the unit's own active workers
--      (most_named_manager), ties → the smallest person_id;
--   3. else no head (the fallback moves on to the parent unit).
-- Incremental (macros/org_units_headed.sql): on the org snapshot it last judged, a build with a change set
-- judges again only the units of the change set's people (where they are placed now and were before, and
-- the units HR says they manage), their members and managers looked up by index (`= any(array(...))`: scans,
-- not joins, so nested loops stay off on every build); any other build judges every unit.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    indexes=[{'columns': ['org_unit_code'], 'unique': true}],
    pre_hook="{{ org_units_headed_prepare() }}",
    post_hook=[
        "delete from {{ audit_table('placed_units_before') }}",
        "{{ relation_read('int_org_units_headed', ref('int_org_units_resolved')) }}",
        "{{ analyze_built() }}"
    ]
) }}
{%- set every_unit = org_units_headed_every_unit() %}

with
{%- if not every_unit %}
touched as (  -- noqa: ST03
    {{ org_units_headed_touched() }}
),
{%- endif %}

units as (
    select org_unit_code, manager_person_id from {{ ref('int_org_units_resolved') }}
    {%- if not every_unit %}
    where org_unit_code in (select touched.org_unit_code from touched)
    {%- endif %}
),

members as (
    -- the units' active workers who name a manager other than themselves (by the org_unit_code index)
    select org_unit_code, manager_person_id from {{ ref('int_workers_placed') }}
    where is_active and manager_person_id <> person_id
    {%- if not every_unit %}
        and org_unit_code = any(array(select touched.org_unit_code from touched))
    {%- endif %}
),

active as (
    -- the active workers among the managers named (by the person_id index)
    select person_id from {{ ref('int_workers_placed') }}
    where is_active
    {%- if not every_unit %}
        and person_id = any(array(
            select members.manager_person_id from members
            union
            select units.manager_person_id from units where units.manager_person_id is not null
        ))
    {%- endif %}
),

named as (
    select
        members.org_unit_code,
        members.manager_person_id as candidate_person_id,
        count(*) as times_named
    from members
    inner join active on members.manager_person_id = active.person_id
    group by members.org_unit_code, members.manager_person_id
),

most_named as (
    select distinct on (org_unit_code) org_unit_code, candidate_person_id
    from named
    order by org_unit_code, times_named desc, candidate_person_id
),

given as (
    select units.org_unit_code, units.manager_person_id
    from units
    inner join active on units.manager_person_id = active.person_id
),

final as (
    select
        units.org_unit_code,
        coalesce(given.manager_person_id, most_named.candidate_person_id) as head_person_id,
        case
            when given.manager_person_id is not null then 'org_unit_manager'
            when most_named.candidate_person_id is not null then 'most_named_manager'
        end as head_rule,
        units.manager_person_id as hr_manager_person_id,
        most_named.candidate_person_id as most_named_person_id
    from units
    left join given on units.org_unit_code = given.org_unit_code
    left join most_named on units.org_unit_code = most_named.org_unit_code
)

select * from final
