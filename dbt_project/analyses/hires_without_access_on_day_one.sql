-- Question: which hires did not have their LMS account when their first day began — HR late or ours —
-- and in which time zones?
-- For: HR operations (HR late: the record reached us on or after day one) and IT (ours: quarantined row,
-- held plan, escrow or the pipeline's schedule), per the worker's effective time zone.
-- From access_events: access_granted, initial load left out; one row per time zone plus time_zone '*' for
-- all of them. on_time_share = with access / (hires - HR late), as in access_latency_by_run.
-- hours_late_ours_max: the latest of our own misses (hours after 00:00 local on day one).

with hires as (
    select
        coalesce(time_zone, '(unknown)') as zone,
        on_time,
        cause,
        latency_hours
    from {{ ref('access_events') }}
    where event_type = 'access_granted'
        and cause <> 'initial_load'
),

counted as (
    select
        case when grouping(zone) = 1 then '*' else zone end as time_zone,
        count(*) as hires,
        count(*) filter (where cause = 'hr_late') as hires_hr_late,
        count(*) filter (where on_time) as with_access_on_day_one,
        count(*) filter (where on_time is not true) as without_access_on_day_one,
        count(*) filter (where on_time is not true and cause = 'hr_late') as without_access_hr_late,
        count(*) filter (where on_time is not true and cause <> 'hr_late') as without_access_ours,
        count(*) filter (where on_time is not true and cause = 'quarantined_row') as ours_quarantined_row,
        count(*) filter (where on_time is not true and cause = 'held_plan') as ours_held_plan,
        count(*) filter (where on_time is not true and cause = 'escrow') as ours_escrow,
        count(*) filter (where on_time is not true and cause = 'pipeline') as ours_pipeline,
        max(latency_hours) filter (where on_time is not true and cause <> 'hr_late') as hours_late_ours_max,
        max(latency_hours) filter (where on_time is not true and cause = 'hr_late') as hours_late_hr_max
    from hires
    group by grouping sets ((zone), ())
),

final as (
    select
        *,
        round(cast(with_access_on_day_one as numeric) / nullif(hires - hires_hr_late, 0), 4) as on_time_share
    from counted
)

select * from final
order by time_zone = '*' desc, without_access_on_day_one desc, time_zone
