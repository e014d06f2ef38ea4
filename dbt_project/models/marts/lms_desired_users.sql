-- The LMS account every worker should have on the run's logical date (SCIM core User + enterprise
-- extension). Accounts are never deleted: leavers stay here with is_active = false.
with workers as (
    select * from {{ ref('workers') }}
),

effective as (
    select person_id, access_from_on, access_until_on, is_active from {{ ref('int_workers_effective') }}
),

final as (
    select
        workers.person_id,
        coalesce(workers.username, workers.work_email) as user_name,
        workers.first_name as given_name,
        workers.last_name as family_name,
        coalesce(workers.preferred_name, workers.first_name) || ' ' || workers.last_name as display_name,
        workers.work_email as email,
        workers.job_title as title,
        workers.employee_number,
        workers.org_unit_name as department,
        effective.access_from_on,
        effective.access_until_on,
        effective.is_active
    from workers
    inner join effective on workers.person_id = effective.person_id
)

select * from final
