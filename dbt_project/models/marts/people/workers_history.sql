{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    indexes=[{'columns': ['person_id']}],
    pre_hook="{{ delete_changed_people('person_id') }}"
) }}
-- Who was what, where and under whom, by logical date (SCD2 from snapshots.snap_workers).
-- A version holds on day D when valid_from_on <= D and (valid_to_on is null or D < valid_to_on):
-- valid_to_on is the first day it no longer held (exclusive). Versions opened and replaced on the same
-- day (a rerun of a day with corrected data) are left out.
-- Incremental (macros/changed_people.sql): snap_workers changes only the versions of the change set's people,
-- whose rows an incremental build deletes and inserts again (looked up by snap_workers' person_id index).
with versions as (
    select * from {{ ref('snap_workers') }}
    where {{ changed_people_lookup('person_id') }}
),

identities as (
    select person_id, account_person_id from {{ ref('int_identity_decisions') }}
),

dated as (
    select
        versions.*,
        cast(versions.dbt_valid_from as date) as valid_from_on,
        cast(versions.dbt_valid_to as date) as valid_to_on
    from versions
),

final as (
    select
        -- ids
        dated.person_id,
        identities.account_person_id,
        dated.employee_number,
        -- person
        dated.first_name,
        dated.last_name,
        dated.preferred_name,
        dated.work_email,
        dated.username,
        -- employment
        dated.employment_status,
        dated.employment_type,
        dated.hire_date,
        dated.start_date,
        dated.termination_date,
        dated.last_day_of_work,
        -- job and place
        dated.job_code,
        dated.job_title,
        dated.job_family,
        dated.org_unit_code,
        dated.org_unit_name,
        dated.manager_person_id,
        dated.location_code,
        dated.country,
        dated.time_zone,
        -- validity
        dated.valid_from_on,
        dated.valid_to_on,
        dated.valid_to_on is null as is_current
    from dated
    left join identities on dated.person_id = identities.person_id
    where dated.valid_to_on is null or dated.valid_to_on > dated.valid_from_on
)

select * from final
