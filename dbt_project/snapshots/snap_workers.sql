{#
    SCD2 history of the gated workers, one version per change of a business attribute. Validity is the
    run's logical date (as_of -> dbt_valid_from / dbt_valid_to), never now(); a person missing from a
    run's snapshot gets their open version closed at that logical date (hard_deletes: invalidate, with
    macros/snapshots/snapshot_get_time.sql). Rerunning a day changes nothing (check strategy).
    Config in snap_workers.yml.
#}
{% snapshot snap_workers %}

with workers as (
    select * from {{ ref('workers') }}
),

versioned as (
    select
        person_id,
        employee_number,
        first_name,
        last_name,
        preferred_name,
        work_email,
        username,
        employment_status,
        employment_type,
        hire_date,
        start_date,
        termination_date,
        last_day_of_work,
        job_code,
        job_title,
        job_family,
        org_unit_code,
        org_unit_name,
        manager_person_id,
        location_code,
        country,
        time_zone,
        cast(as_of_date as timestamp without time zone) as as_of
    from workers
)

select * from versioned

{% endsnapshot %}
