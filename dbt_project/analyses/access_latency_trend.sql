-- Question: how timely were LMS accounts granted and removed over the last 30 runs?
-- For: HR and IT operations (the trend of the access timeliness page, hrlms.access.report, as a table).
-- From access_latency_by_run: one row per run whose plan wrote accounts or memberships. The initial load is
-- left out; HR-late hires and leavers (HR's record arrived at or after the target) are counted apart:
-- shares = on time / (all - HR late), hours leave them out. Hours: negative = early, positive = late.
-- `dbt compile --select access_latency_trend`, then run target/compiled/hrlms/analyses/... in psql.

with runs as (
    select * from {{ ref('access_latency_by_run') }}
),

last_runs as (
    select * from runs
    order by run_logical_ts desc nulls last, run_key desc
    limit 30
),

final as (
    select
        run_key,
        run_logical_ts,
        hires,
        hires_hr_late,
        hires_before_day_one,
        hires - hires_hr_late - hires_before_day_one as hires_late_ours,
        hires_on_time_share,
        hire_hours_p50,
        hire_hours_p95,
        hire_hours_max,
        leavers,
        leavers_hr_late,
        leavers_within_bound,
        leavers_on_time_share,
        leaver_hours_p50,
        leaver_hours_p95,
        leaver_hours_max,
        audience_changes,
        audience_hours_p50,
        audience_hours_max
    from last_runs
)

select * from final
order by run_logical_ts, run_key
