-- The head of each resolved org unit, for the org-chain manager fallback:
--   1. the unit's manager_person_id from HR (org_unit_manager) when that person is an active worker;
--   2. else the active worker most often named as (primary) manager by the unit's own active workers
--      (most_named_manager), ties → the smallest person_id;
--   3. else no head (the fallback moves on to the parent unit).
{{ config(
    materialized='table',
    pre_hook="set local enable_nestloop = off",
    post_hook="analyze {{ this }}"
) }}

with units as (
    select org_unit_code, manager_person_id from {{ ref('int_org_units_resolved') }}
),

workers as (
    select person_id, manager_person_id, is_active from {{ ref('int_workers_placed') }}
),

placed as (
    select person_id, org_unit_code from {{ ref('int_workers_placed') }}
),

named as (
    select
        placed.org_unit_code,
        workers.manager_person_id as candidate_person_id,
        count(*) as times_named
    from placed
    inner join workers on placed.person_id = workers.person_id and workers.is_active
    inner join workers as managers on workers.manager_person_id = managers.person_id and managers.is_active
    where workers.manager_person_id <> workers.person_id
    group by placed.org_unit_code, workers.manager_person_id
),

most_named as (
    select distinct on (org_unit_code) org_unit_code, candidate_person_id
    from named
    order by org_unit_code, times_named desc, candidate_person_id
),

given as (
    select units.org_unit_code, units.manager_person_id
    from units
    inner join workers on units.manager_person_id = workers.person_id and workers.is_active
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
