-- Clean workers of the run's snapshot, as of the run's logical date.
with workers as (
    select * from {{ ref('int_workers_gated') }}
),

org_units as (
    select * from {{ ref('int_org_units_current') }}
),

final as (
    select
        workers.person_id,
        workers.employee_number,
        workers.first_name,
        workers.last_name,
        workers.preferred_name,
        workers.work_email,
        workers.username,
        workers.employment_status,
        workers.employment_type,
        workers.hire_date,
        workers.start_date,
        workers.termination_date,
        workers.last_day_of_work,
        workers.job_code,
        workers.job_title,
        workers.job_family,
        workers.org_unit_code,
        org_units.org_unit_name,
        workers.manager_person_id,
        workers.location_code,
        workers.country,
        workers.time_zone,
        workers.snapshot_id,
        workers.line_no,
        cast('{{ var("logical_date") }}' as date) as as_of_date
    from workers
    left join org_units on workers.org_unit_code = org_units.org_unit_code
)

select * from final
