-- The LMS account every worker should have on the run's logical date (SCIM core User + enterprise
-- extension). Accounts are never deleted: leavers stay here with is_active = false.
with workers as (
    select * from {{ ref('workers') }}
),

dated as (
    select
        *,
        coalesce(start_date, hire_date) as access_from_on,
        coalesce(last_day_of_work, termination_date) as access_until_on
    from workers
),

final as (
    select
        person_id,
        coalesce(username, work_email) as user_name,
        first_name as given_name,
        last_name as family_name,
        coalesce(preferred_name, first_name) || ' ' || last_name as display_name,
        work_email as email,
        job_title as title,
        employee_number,
        org_unit_name as department,
        access_from_on,
        access_until_on,
        (
            employment_status in ('active', 'leave', 'prehire')
            and access_from_on <= as_of_date
            and (access_until_on is null or access_until_on >= as_of_date)
        ) as is_active
    from dated
)

select * from final
