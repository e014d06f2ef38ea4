-- Clean workers of the run's snapshot, as of the run's logical date. org_unit_code/org_unit_name are
-- the worker's place in the resolved org tree (int_workers_placed): an unknown or missing org code
-- puts the worker in the holding unit, so the LMS department follows.
{{ config(pre_hook="set local enable_nestloop = off") }}  -- the gated view is badly underestimated

with workers as (
    select * from {{ ref('int_workers_gated') }}
),

placed as (
    select person_id, org_unit_code, org_unit_name from {{ ref('int_workers_placed') }}
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
        placed.org_unit_code,
        placed.org_unit_name,
        workers.manager_person_id,
        workers.location_code,
        workers.country,
        workers.time_zone,
        workers.snapshot_id,
        workers.line_no,
        cast('{{ run_param("logical_date") }}' as date) as as_of_date
    from workers
    left join placed on workers.person_id = placed.person_id
)

select * from final
