-- Month-end compliance snapshots for audits: one row per month × person × requirement. Each run
-- rewrites the rows of the people it sees for its own month, so after the month's last run the month
-- holds its month-end state; a person who left during the month keeps the last status we saw, and
-- earlier months are never touched (terminated people stay in history).
-- A build with a change set rewrites the rows of its people only once its month has rows (the other
-- people's statuses are those the month already holds); the first build of a month writes everyone.
-- as_of_date: the run that wrote the row.
-- full_refresh=false: history; a full build (dbt build --full-refresh, hrlms.warehouse.changes) keeps it.
{{ config(
    materialized='incremental',
    unique_key=['month_end_on', 'person_id', 'requirement_id'],
    incremental_strategy='delete+insert',
    on_schema_change='append_new_columns',
    full_refresh=false,
    post_hook=["create index if not exists {{ this.identifier }}__month_person on {{ this }} (month_end_on, person_id)",
               "{{ analyze_built() }}"]
) }}
{%- set month_end -%}
    cast(date_trunc('month', cast('{{ run_param("logical_date") }}' as date)) + interval '1 month - 1 day' as date)
{%- endset %}
{%- set only_changed = false %}
{%- if execute and is_incremental() and change_set_id() > 0 %}
    {%- set month_written = run_query("select exists (select 1 from " ~ this ~ " where month_end_on = " ~ month_end ~ ")") %}
    {%- set only_changed = month_written.columns[0].values()[0] %}
{%- endif %}

with status as (
    select * from {{ ref('learning_compliance_status') }}
    {%- if only_changed %}
    where {{ changed_people_lookup('person_id') }}
    {%- endif %}
),

final as (
    select
        {{ month_end }} as month_end_on,
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
