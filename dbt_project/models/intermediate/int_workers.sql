{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    indexes=[{'columns': ['person_id']}],
    pre_hook="{{ delete_changed_people('person_id') }}",
    post_hook="{{ analyze_built() }}"
) }}
-- The clean workers (int_workers_gated) in their place in the resolved org tree (int_workers_placed): an
-- unknown or missing org code puts the worker in the holding unit, so the LMS department follows. The
-- stored rows behind marts.workers, which adds the run's date.
-- Incremental (macros/changed_people.sql): an incremental build recomputes the change set's people only
-- (an edited HR record, a unit that moved, was renamed or closed puts its people in it); snapshot_id and
-- line_no are the lineage of a row (the snapshot and line it was last taken from).
with workers as (
    select * from {{ ref('int_workers_gated') }}
    where {{ changed_people_filter('person_id') }}
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
        workers.line_no
    from workers
    left join placed on workers.person_id = placed.person_id
)

select * from final
