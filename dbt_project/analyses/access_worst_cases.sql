-- Question: which hires got their LMS account latest, and which leavers kept it longest, and why?
-- For: IT operations and HR business partners (the "Worst cases" table of the access timeliness page,
-- hrlms.access.report, per kind of change and over all runs).
-- From access_events: the 20 largest latencies of each of access_granted (hours from 00:00 local on day one
-- to the account) and access_removed (hours of access after the last local day ended), initial load left
-- out. cause: hr_late (HR's record arrived at or after the target), quarantined_row, held_plan, escrow,
-- pipeline (no recorded reason: the schedule or the run's duration) or on_time.
-- hr_known_hours_after_target: how long after the target the date reached us (positive = HR late).

with events as (
    select * from {{ ref('access_events') }}
    where event_type in ('access_granted', 'access_removed')
        and cause <> 'initial_load'
        and latency_hours is not null
),

ranked as (
    select
        *,
        row_number() over (partition by event_type order by latency_hours desc, event_id) as rank_in_type
    from events
),

final as (
    select
        event_type,
        rank_in_type,
        person_id,
        account_person_id,
        time_zone,
        target_basis,
        target_at,
        effective_at,
        latency_hours,
        on_time,
        cause,
        hr_known_at,
        round(cast(extract(epoch from hr_known_at - target_at) / 3600 as numeric), 2) as hr_known_hours_after_target,
        effective_basis,
        run_key,
        run_logical_ts,
        plan_id,
        op_id
    from ranked
    where rank_in_type <= 20
)

select * from final
order by event_type, rank_in_type
