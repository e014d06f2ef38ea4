-- Every known defect per person, for HR to fix: one row per person, issue type and field, kept across
-- runs. An issue seen in the run is open (first_seen_on kept, last_seen_on = the logical date); an open
-- issue the run no longer sees is closed on the run's logical date; one that comes back is reopened
-- with its first_seen_on. Rerunning a logical date changes nothing. A value two people share (the gate's
-- duplicate_email / duplicate_username / duplicate_employee_number) is listed for both: the person whose
-- line was quarantined and the one who keeps the value, each with the other in related_person_ids.
-- full_refresh=false: history; a full build (dbt build --full-refresh, hrlms.warehouse.changes) keeps it.
{{ config(
    materialized='incremental',
    unique_key=['person_id', 'issue_type', 'field'],
    incremental_strategy='delete+insert',
    on_schema_change='append_new_columns',
    full_refresh=false
) }}

with quarantined as (
    select * from {{ source('dq', 'quarantine') }}
    where snapshot_id = {{ run_param('snapshot_id') }} and entity = 'workers' and record_key is not null
),

identities as (
    select * from {{ ref('int_workers_identity') }}
),

effective as (
    select person_id, time_zone, has_unknown_time_zone from {{ ref('int_workers_effective') }}
),

org_issues as (
    select person_id, issue_type, field, value, check_name from {{ ref('int_data_issues_org') }}
),

{% if is_incremental() %}
previous as (
    -- related_person_ids read by name from the row: a table built before the column existed has none
    select
        person_id, issue_type, field, value, check_name, first_seen_on, last_seen_on, is_open, closed_on,
        to_jsonb(this_table) ->> 'related_person_ids' as related_person_ids
    from {{ this }} as this_table
),
{% else %}
previous as (
    select
        cast(null as text) as person_id,
        cast(null as text) as issue_type,
        cast(null as text) as field,
        cast(null as text) as value,
        cast(null as text) as check_name,
        cast(null as date) as first_seen_on,
        cast(null as date) as last_seen_on,
        cast(null as boolean) as is_open,
        cast(null as date) as closed_on,
        cast(null as text) as related_person_ids
    where false
),
{% endif %}

found as (
    -- rows the gate quarantined (the GX expectation's rule names the issue)
    select
        record_key as person_id,
        rule as issue_type,
        coalesce(field, '(row)') as field,
        min(value) as value,
        rule as check_name,
        min(related_key) as related_person_ids
    from quarantined
    group by record_key, rule, coalesce(field, '(row)')
    union all
    -- the other side of a shared value: the person who keeps it (its line flows; HR may fix either)
    select
        related_key as person_id,
        rule as issue_type,
        coalesce(field, '(row)') as field,
        min(value) as value,
        rule as check_name,
        string_agg(distinct record_key, ',' order by record_key) as related_person_ids
    from quarantined
    where related_key is not null
    group by related_key, rule, coalesce(field, '(row)')
    union all
    -- identity: the match rules point at several accounts
    select person_id, 'identity_ambiguous', 'person_id', candidate_account_ids, 'int_identity_decisions', null
    from identities
    where is_ambiguous
    union all
    -- identity: two current workers on one account
    select person_id, 'duplicate_account', 'account_person_id', account_person_id, 'int_workers_identity', null
    from identities
    where has_shared_account
    union all
    -- effective dating fell back to default_time_zone
    select person_id, 'unknown_time_zone', 'time_zone', time_zone, 'int_workers_effective', null
    from effective
    where has_unknown_time_zone
    union all
    -- org placement and managers
    select person_id, issue_type, coalesce(field, '(row)'), value, check_name, null
    from org_issues
),

today as (
    select distinct on (person_id, issue_type, field) *
    from found
    where person_id is not null
    order by person_id, issue_type, field, value
),

seen as (
    select
        today.person_id,
        today.issue_type,
        today.field,
        today.value,
        today.check_name,
        coalesce(previous.first_seen_on, cast('{{ run_param("logical_date") }}' as date)) as first_seen_on,
        greatest(previous.last_seen_on, cast('{{ run_param("logical_date") }}' as date)) as last_seen_on,
        true as is_open,
        cast(null as date) as closed_on,
        today.related_person_ids
    from today
    left join previous
        on today.person_id = previous.person_id
        and today.issue_type = previous.issue_type
        and today.field = previous.field
),

closed as (
    select
        previous.person_id,
        previous.issue_type,
        previous.field,
        previous.value,
        previous.check_name,
        previous.first_seen_on,
        previous.last_seen_on,
        false as is_open,
        cast('{{ run_param("logical_date") }}' as date) as closed_on,
        previous.related_person_ids
    from previous
    where
        previous.is_open
        and previous.last_seen_on <= cast('{{ run_param("logical_date") }}' as date)
        and not exists (
            select 1 from today
            where today.person_id = previous.person_id
                and today.issue_type = previous.issue_type
                and today.field = previous.field
        )
),

final as (
    select * from seen
    union all
    select * from closed
)

select * from final
