-- Compliance per person × requirement on the run's logical date (each worker's local date), for every open
-- assignment: the rows of int_learning_status (stored; recomputed for the people of each build's change
-- set) with the run's date added here, so that no stored row carries it. See int_learning_status for the
-- statuses and the completion that counts.
{{ config(materialized='view') }}

with status as (
    select * from {{ ref('int_learning_status') }}
),

final as (
    select
        assignment_id,
        person_id,
        account_person_id,
        requirement_id,
        requirement_kind,
        requirement_title,
        rule_ids,
        assigned_on,
        due_on,
        completed_at,
        completed_on,
        score,
        completion_verb,
        completion_source,
        expires_on,
        renewal_opens_on,
        status,
        exemption_reason,
        exempt_until,
        org_unit_code,
        org_unit_name,
        manager_person_id,
        location_code,
        country,
        job_code,
        job_family,
        {{ local_date_in('effective_time_zone') }} as as_of_local_date,
        cast('{{ run_param("logical_date") }}' as date) as as_of_date
    from status
)

select * from final
