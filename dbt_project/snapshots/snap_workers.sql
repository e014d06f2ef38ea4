{#
    SCD2 history of the gated workers, one version per change of a business attribute. Validity is the
    run's logical date (as_of -> dbt_valid_from / dbt_valid_to), never now(); a person missing from a
    run's snapshot gets their open version closed at that logical date (the post-hook below, with
    macros/snapshots/snapshot_get_time.sql). Rerunning a day changes nothing (check strategy).
    Config in _snapshots.yml.

    Incremental builds (macros/changed_people.sql): the snapshot compares only the change set's people
    (every attribute compared here is one of their own HR fields or their org unit's name, and a change of
    either puts them in the change set), and the post-hook closes the versions of those of them who left
    the gated workers. dbt's own hard_deletes: invalidate would close everyone outside the compared rows,
    so it is `ignore` and the post-hook does the same on a full build (no change set: everyone). With a change set
    it looks those people up in `workers` by index: as an anti-join PostgreSQL hashed every worker's row for it
    (1M workers, 42,602 people: 1.6 s -> 0.13 s, for the few leavers it closes).
    The first post-hooks index person_id and dbt_scd_id: the close above, dbt's staging query
    (macros/snapshots/snapshot_staging_table.sql), workers_history's incremental build and the gate's
    lookups of earlier holders find a person's versions by the first, dbt's merge closes versions by the second;
    int_identity_decisions finds the earlier holders of a decided worker's match keys by the next two.
#}
{% snapshot snap_workers %}

{{ config(post_hook=["{{ person_index() }}", "{{ person_index('dbt_scd_id') }}", "{{ person_index('employee_number') }}",
    "{{ person_index('work_email') }}", "
    update {{ this }} as versions set dbt_valid_to = {{ snapshot_get_time() }}
    where versions.dbt_valid_to is null
    {%- if change_set_id() > 0 %}
        and versions.person_id = any(array(
            select person_id from {{ changed_people() }} as changed
            except
            select person_id from {{ ref('workers') }} where person_id = any(array{{ changed_people() }})))
    {%- else %}
        and not exists (select from {{ ref('workers') }} where person_id = versions.person_id)
    {%- endif %}
"]) }}

with workers as (
    select * from {{ ref('workers') }}
    {%- if change_set_id() > 0 %}
    where person_id in {{ changed_people() }}
    {%- endif %}
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
