-- Each gated worker's place in the resolved org tree: the unit HR gives when it exists in the run's
-- org snapshot, else the holding unit (is_unknown_org_code; a missing code counts as unknown).
-- Workers of a closed unit (status inactive) stay where HR puts them (is_org_unit_inactive).
-- Also carries the manager fields and effective dating the org models need (local_date: the run's moment in
-- the worker's zone; int_workers_effective does not store it), so they read one analysed
-- table (the planner badly underestimates the gated view; nested loops are disabled here for that reason).
-- Indexed on person_id: the walks of int_managers_resolved's incremental path look people up by it.
{{ config(
    materialized='table',
    indexes=[{'columns': ['person_id']}],
    pre_hook="set local enable_nestloop = off",
    post_hook="analyze {{ this }}"
) }}

with workers as (
    select
        person_id,
        org_unit_code,
        employment_status,
        {{ local_date_in('effective_time_zone') }} as local_date,
        is_active,
        manager_person_id,
        temporary_manager_person_id,
        temporary_manager_from,
        temporary_manager_until,
        secondary_manager_person_ids
    from {{ ref('int_workers_effective') }}
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
        workers.local_date,
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
