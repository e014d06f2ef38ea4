{{ config(materialized='view', post_hook=[]) }}
-- The access-latency KPIs of each run (the run whose plan made the writes), from marts.access_events.
-- Hires and leavers of the initial load (started or left before the first HR file) are left out; hires
-- whose record reached us only after their first day began are counted apart as HR late, not in our shares.
with events as (
    select * from {{ ref('access_events') }}
    where run_key is not null and cause <> 'initial_load'
),

per_run as (
    select
        run_key,
        min(run_logical_ts) as run_logical_ts,
        count(*) filter (where event_type = 'access_granted') as hires,
        count(*) filter (where event_type = 'access_granted' and cause = 'hr_late') as hires_hr_late,
        count(*) filter (where event_type = 'access_granted' and on_time) as hires_before_day_one,
        percentile_cont(0.5) within group (order by latency_hours)
            filter (where event_type = 'access_granted' and cause <> 'hr_late') as hire_hours_p50,
        percentile_cont(0.95) within group (order by latency_hours)
            filter (where event_type = 'access_granted' and cause <> 'hr_late') as hire_hours_p95,
        max(latency_hours) filter (where event_type = 'access_granted' and cause <> 'hr_late') as hire_hours_max,
        count(*) filter (where event_type = 'access_removed' and target_basis = 'last_day_end') as leavers,
        count(*) filter (where event_type = 'access_removed' and cause = 'hr_late') as leavers_hr_late,
        count(*) filter (where event_type = 'access_removed' and on_time) as leavers_within_bound,
        percentile_cont(0.5) within group (order by latency_hours)
            filter (where event_type = 'access_removed' and target_basis = 'last_day_end' and cause <> 'hr_late')
            as leaver_hours_p50,
        percentile_cont(0.95) within group (order by latency_hours)
            filter (where event_type = 'access_removed' and target_basis = 'last_day_end' and cause <> 'hr_late')
            as leaver_hours_p95,
        max(latency_hours)
            filter (where event_type = 'access_removed' and target_basis = 'last_day_end' and cause <> 'hr_late')
            as leaver_hours_max,
        count(*) filter (where event_type in ('audience_joined', 'audience_left')) as audience_changes,
        percentile_cont(0.5) within group (order by latency_hours)
            filter (where event_type in ('audience_joined', 'audience_left')) as audience_hours_p50,
        max(latency_hours) filter (where event_type in ('audience_joined', 'audience_left')) as audience_hours_max
    from events
    group by run_key
)

select
    run_key,
    run_logical_ts,
    hires,
    hires_hr_late,
    hires_before_day_one,
    round(cast(hires_before_day_one as numeric) / nullif(hires - hires_hr_late, 0), 4) as hires_on_time_share,
    round(cast(hire_hours_p50 as numeric), 2) as hire_hours_p50,
    round(cast(hire_hours_p95 as numeric), 2) as hire_hours_p95,
    hire_hours_max,
    leavers,
    leavers_hr_late,
    leavers_within_bound,
    round(cast(leavers_within_bound as numeric) / nullif(leavers - leavers_hr_late, 0), 4) as leavers_on_time_share,
    round(cast(leaver_hours_p50 as numeric), 2) as leaver_hours_p50,
    round(cast(leaver_hours_p95 as numeric), 2) as leaver_hours_p95,
    leaver_hours_max,
    audience_changes,
    round(cast(audience_hours_p50 as numeric), 2) as audience_hours_p50,
    audience_hours_max
from per_run
