-- Each gated worker's place in the resolved org tree: the unit HR gives when it exists in the run's
-- org snapshot, else the holding unit (is_unknown_org_code; a missing code counts as unknown).
-- Workers of a closed unit (status inactive) stay where HR puts them (is_org_unit_inactive).
-- Also carries the manager fields and effective dating the org models need (effective_time_zone: their
-- readers compute the worker's local date from it, macro local_date_in), so they read one analysed
-- table (the planner badly underestimates the gated view; nested loops are disabled here for that reason).
-- Indexed on person_id: the walks of int_managers_resolved's incremental path look people up by it; on
-- org_unit_code: int_org_units_headed's incremental path reads the members of the units it judges.
-- Incremental (macros/changed_people.sql): an incremental build recomputes the change set's people only
-- (a unit that was added, removed, renamed or closed puts its people in it, the holding unit's included);
-- its pre-hook keeps the units they were placed in (audit.placed_units_before) for int_org_units_headed.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    indexes=[{'columns': ['person_id']}],
    pre_hook=["set local enable_nestloop = off", "{{ placed_units_before() }}",
              "{{ delete_changed_people('person_id') }}"],
    post_hook=["{{ person_index('org_unit_code') }}", "{{ analyze_built() }}"]
) }}

with workers as (
    select
        person_id,
        org_unit_code,
        employment_status,
        effective_time_zone,
        is_active,
        manager_person_id,
        temporary_manager_person_id,
        temporary_manager_from,
        temporary_manager_until,
        secondary_manager_person_ids
    from {{ ref('int_workers_effective') }}
    where {{ changed_people_lookup('person_id') }}
),

units as (
    select org_unit_code, org_unit_name, org_unit_status from {{ ref('int_org_units_resolved') }}
),

holding as (
    -- one row, read through scalar subqueries (init plans: evaluated once). A cross join with it made
    -- the planner rescan the units CTE for every worker: 1.1 billion rows and 157 s at 100k workers.
    select org_unit_code, org_unit_name, org_unit_status
    from units
    where org_unit_code = '{{ var("holding_org_unit_code") | replace("'", "''") }}'
),

placed as (
    select
        workers.person_id,
        coalesce(units.org_unit_code, (select org_unit_code from holding)) as org_unit_code,
        coalesce(units.org_unit_name, (select org_unit_name from holding)) as org_unit_name,
        workers.org_unit_code as hr_org_unit_code,
        units.org_unit_code is null as is_unknown_org_code,
        coalesce(units.org_unit_status, (select org_unit_status from holding)) = 'inactive'
            as is_org_unit_inactive,
        workers.employment_status,
        workers.effective_time_zone,
        workers.is_active,
        workers.manager_person_id,
        workers.temporary_manager_person_id,
        workers.temporary_manager_from,
        workers.temporary_manager_until,
        workers.secondary_manager_person_ids
    from workers
    left join units on workers.org_unit_code = units.org_unit_code
)

select * from placed
