-- Month-end compliance snapshots for audits: one row per month × person × requirement. Each run
-- rewrites the rows of the people it sees for its own month, so after the month's last run the month
-- holds its month-end state; a person who left during the month keeps the last status we saw, and
-- earlier months are never touched (terminated people stay in history).
-- full_refresh=false: history; a full build (dbt build --full-refresh, hrlms.warehouse.changes) keeps it.
{{ config(
    materialized='incremental',
    unique_key=['month_end_on', 'person_id', 'requirement_id'],
    incremental_strategy='delete+insert',
    on_schema_change='append_new_columns',
    full_refresh=false
) }}

with status as (
    select * from {{ ref('learning_compliance_status') }}
),

final as (
    select
        cast(date_trunc('month', cast('{{ run_param("logical_date") }}' as date)) + interval '1 month - 1 day' as date)
            as month_end_on,
        person_id,
        account_person_id,
        requirement_id,
        requirement_title,
        assigned_on,
        due_on,
        completed_at,
        score,
        expires_on,
        status,
        org_unit_code,
        manager_person_id,
        location_code,
        job_code,
        as_of_date
    from status
)

select * from final
