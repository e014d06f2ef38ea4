-- Plans with their run's logical moment and offset (stg_sync__runs); a plan without a recorded run (made
-- by reconcile, or before runs were recorded with plans) is taken as live at its own creation.
with plans as (
    select * from {{ source('sync', 'plans') }}
),

runs as (
    select * from {{ ref('stg_sync__runs') }}
),

decided as (
    select distinct plan_id from {{ source('sync', 'plan_decisions') }}
)

select
    plans.plan_id,
    plans.run_key,
    plans.logical_date,
    coalesce(plans.logical_ts, runs.logical_ts, plans.created_at) as logical_ts,
    coalesce(runs.moment_offset, interval '0') as moment_offset,
    coalesce(runs.is_live, true) as is_live,
    plans.status,
    plans.held_reason is not null or decided.plan_id is not null as was_held,
    plans.created_at
from plans
left join runs on runs.run_key = plans.run_key
left join decided on decided.plan_id = plans.plan_id
