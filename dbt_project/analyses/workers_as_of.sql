-- Who was where, and who reported to whom, on a given day (BI example; `dbt compile --vars '{as_of: 2026-01-06}'`).
-- The pattern for any SCD2 mart here: valid_from_on <= D and (valid_to_on is null or D < valid_to_on).
{% set as_of = var('as_of', run_param('logical_date')) %}

with workers as (
    select * from {{ ref('workers_history') }}
    where valid_from_on <= date '{{ as_of }}'
        and (valid_to_on is null or date '{{ as_of }}' < valid_to_on)
),

org_units as (
    select * from {{ ref('org_units_history') }}
    where valid_from_on <= date '{{ as_of }}'
        and (valid_to_on is null or date '{{ as_of }}' < valid_to_on)
),

final as (
    select
        workers.person_id,
        workers.account_person_id,
        coalesce(workers.preferred_name, workers.first_name) || ' ' || workers.last_name as display_name,
        workers.employment_status,
        workers.job_title,
        workers.org_unit_code,
        org_units.org_unit_name,
        org_units.parent_org_unit_code,
        workers.manager_person_id,
        coalesce(managers.preferred_name, managers.first_name) || ' ' || managers.last_name as manager_name,
        date '{{ as_of }}' as as_of_date
    from workers
    left join org_units on workers.org_unit_code = org_units.org_unit_code
    left join workers as managers on workers.manager_person_id = managers.person_id
)

select * from final
order by org_unit_code, person_id
