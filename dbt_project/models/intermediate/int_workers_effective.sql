{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    indexes=[{'columns': ['person_id']}],
    pre_hook="{{ delete_changed_people('person_id') }}",
    post_hook="{{ analyze_built() }}"
) }}
-- A table (not a view) with fresh statistics: downstream joins plan badly on view estimates.
-- Effective dating per worker: the run's logical moment seen in the worker's own time zone.
-- Access runs from the (local) start date, minus provision_days_before_start, through the last day of
-- work (else termination date), minus termination_lookahead_days. Never now().
-- Starts are judged access_lead_hours ahead of the run's moment: a run grants the access of everyone whose
-- first local day begins before the next scheduled run could (hourly schedule: every hire is active before
-- 00:00 local on day one). Ends are judged at the run's moment: access lasts through the whole last day.
-- Incremental (macros/changed_people.sql): an incremental build recomputes the change set's people only.
-- The local date is not stored (it moves every day for everyone): readers compute it from
-- effective_time_zone (macro local_date_in). is_active is stored: a person whose access starts or ends
-- between two builds, in their zone, is in the change set (reason dates).
with workers as (
    select * from {{ ref('int_workers_gated') }}
    where {{ changed_people_filter('person_id') }}
),

zones as (
    select name from pg_catalog.pg_timezone_names
),

zoned as (
    select
        workers.*,
        coalesce(zones.name, '{{ var("default_time_zone") }}') as effective_time_zone,
        zones.name is null as has_unknown_time_zone
    from workers
    left join zones on zones.name = workers.time_zone
),

dated as (
    select
        *,
        coalesce(start_date, hire_date) - {{ var("provision_days_before_start") }} as access_from_on,
        coalesce(last_day_of_work, termination_date) - {{ var("termination_lookahead_days") }}
            as access_until_on
    from zoned
),

final as (
    select
        *,
        {% set local_date = local_date_in('effective_time_zone') -%}
        {% set start_local_date = local_date_in('effective_time_zone', var('access_lead_hours')) -%}
        case
            when employment_status not in ('active', 'leave', 'prehire', 'terminated') then false
            when employment_status = 'terminated' and access_until_on is null then false
            when access_until_on is not null and {{ local_date }} > access_until_on then false
            when employment_status = 'leave' and not {{ var("keep_account_on_leave") }} then false
            when access_from_on is null or {{ start_local_date }} < access_from_on then false
            else true
        end as is_active
    from dated
)

select * from final
