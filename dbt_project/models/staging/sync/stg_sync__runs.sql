-- One row per run: its start, its logical moment, and the offset from wall-clock time to its own time line
-- (zero for a live run). See _sync__models.yml.
with stages as (
    select run_key, logical_date, started_at from {{ source('audit', 'stage_runs') }}
),

planned as (
    select run_key, min(logical_ts) as logical_ts
    from {{ source('sync', 'plans') }}
    where run_key is not null and logical_ts is not null
    group by run_key
),

runs as (
    select
        stages.run_key,
        min(stages.started_at) as run_started_at,
        coalesce(min(planned.logical_ts), cast(min(stages.logical_date) as timestamp) at time zone 'UTC')
            as logical_ts
    from stages
    left join planned on planned.run_key = stages.run_key
    group by stages.run_key
)

select
    run_key,
    run_started_at,
    logical_ts,
    run_started_at >= logical_ts and run_started_at < logical_ts + interval '1 day' as is_live,
    case
        when run_started_at >= logical_ts and run_started_at < logical_ts + interval '1 day' then interval '0'
        else logical_ts - run_started_at
    end as moment_offset
from runs
