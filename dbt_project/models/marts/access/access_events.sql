{{ config(materialized='view', post_hook=[]) }}
-- One row per access change with its target moment and the moment it took effect (see _access__models.yml).
--   access_granted   a create / reactivate of an account   target: 00:00 local on the first day of work
--   access_removed   a deactivation                         target: 00:00 local after the last day of work
--                                                           (the run that first saw a leaver without a
--                                                           last day, when HR gave none)
--   audience_joined / audience_left   a membership write (role, org, location or job change)
--                                                           target: the logical moment of the run that saw it
--   assignment_due   an assignment spell                    target: the end of its local due date;
--                                                           took effect: the start of its local assigned day
--   completion_visible   an xAPI statement in the marts     target: when the LRS stored it
--                                                           took effect: the end of the build that read it
-- took effect = the LMS write's own time (sync.ops.applied_at) for live runs; for runs of past logical
-- moments that time plus the run's moment_offset (stg_sync__runs): the logical moment plus the time the run
-- took to reach the write.
{%- set tz_default = var("default_time_zone") %}
with plans as (
    select * from {{ ref('stg_sync__plans') }}
),

applied_ops as (
    select * from {{ ref('stg_sync__ops') }}
),

identity_decisions as (
    select * from {{ ref('int_identity_decisions') }}
),

worker_versions as not materialized (
    select * from {{ ref('snap_workers') }}
),

quarantine_rows as (
    select * from {{ source('dq', 'quarantine') }}
),

hr_snapshots as (
    select * from {{ source('hris', 'snapshots') }}
),

assignment_spells as (
    select * from {{ ref('learning_assignments') }}
),

effective_workers as (
    select * from {{ ref('int_workers_effective') }}
),

stage_runs as (
    select * from {{ source('audit', 'stage_runs') }}
),

pipeline_runs as (
    select * from {{ ref('stg_sync__runs') }}
),

statements as (
    select * from {{ source('lms', 'xapi_statements') }}
),

pulls as (
    select * from {{ source('lms', 'xapi_pulls') }}
),

ops as not materialized (
    select ops.*, plans.logical_ts, plans.moment_offset, plans.is_live, plans.was_held, plans.run_key
    from applied_ops as ops
    inner join plans on plans.plan_id = ops.plan_id
),

decisions as (
    select person_id, account_person_id from identity_decisions
    where account_person_id is not null
),

zones as (
    select name from pg_catalog.pg_timezone_names
),

versions as not materialized (
    select
        snap.person_id,
        coalesce(snap.start_date, snap.hire_date) as start_on,
        coalesce(snap.last_day_of_work, snap.termination_date) as last_on,
        coalesce(zones.name, '{{ tz_default }}') as time_zone,
        snap.dbt_valid_from,
        snap.dbt_valid_to
    from worker_versions as snap
    left join zones on zones.name = snap.time_zone
),

first_load as (
    select min(dbt_valid_from) as first_valid_from from worker_versions
),

account_ops as not materialized (
    select * from ops where op_type in ('create_user', 'reactivate_user', 'deactivate_user')
),

-- the HR version behind each account write: the account's person whose version was current at the run
op_versions as not materialized (
    select distinct on (account_ops.op_id)
        account_ops.op_id,
        versions.person_id as hr_person_id,
        versions.start_on,
        versions.last_on,
        versions.time_zone
    from account_ops
    inner join decisions on decisions.account_person_id = account_ops.person_id
    inner join versions
        on versions.person_id = decisions.person_id
        and versions.dbt_valid_from <= account_ops.logical_ts at time zone 'UTC'
    order by account_ops.op_id, versions.dbt_valid_from desc, versions.person_id
),

-- when the date the target comes from first reached us: the first version of that person carrying it
-- (versions start at 00:00 UTC of the logical date of the run that first read them)
known as (
    select
        op_versions.op_id,
        min(versions.dbt_valid_from) as known_from
    from op_versions
    inner join account_ops on account_ops.op_id = op_versions.op_id
    inner join versions
        on versions.person_id = op_versions.hr_person_id
        and (
            case
                when account_ops.op_type = 'deactivate_user'
                    then versions.last_on is not distinct from op_versions.last_on
                else versions.start_on is not distinct from op_versions.start_on
            end
        )
    group by op_versions.op_id
),

quarantined as (
    select distinct quarantine.record_key as person_id, snapshots.logical_date
    from quarantine_rows as quarantine
    inner join hr_snapshots as snapshots on snapshots.snapshot_id = quarantine.snapshot_id
    where quarantine.entity = 'workers' and quarantine.record_key is not null
),

account_events as (
    select
        'op:' || account_ops.op_id as event_id,
        case when account_ops.op_type = 'deactivate_user' then 'access_removed' else 'access_granted' end
            as event_type,
        coalesce(op_versions.hr_person_id, account_ops.person_id) as person_id,
        account_ops.person_id as account_person_id,
        op_versions.time_zone,
        case
            when account_ops.op_type = 'deactivate_user' and op_versions.last_on is not null
                then cast(op_versions.last_on + 1 as timestamp) at time zone op_versions.time_zone
            when account_ops.op_type = 'deactivate_user' then account_ops.logical_ts
            else cast(op_versions.start_on as timestamp) at time zone op_versions.time_zone
        end as target_at,
        case
            when account_ops.op_type = 'deactivate_user' and op_versions.last_on is not null then 'last_day_end'
            when account_ops.op_type = 'deactivate_user' then 'run_that_saw_it'
            else 'first_day_start'
        end as target_basis,
        cast(known.known_from as timestamp) at time zone 'UTC' as hr_known_at,
        -- an account of someone who started (or left) before the first HR file the warehouse read
        case
            when account_ops.op_type = 'deactivate_user' then op_versions.last_on + 1
            else op_versions.start_on
        end < cast(first_load.first_valid_from as date) as is_initial_load,
        account_ops.applied_at + account_ops.moment_offset as effective_at,
        account_ops.is_live,
        account_ops.was_held,
        account_ops.went_through_escrow,
        exists(
            select 1 from quarantined
            where quarantined.person_id = op_versions.hr_person_id
                and quarantined.logical_date >= cast(known.known_from as date)
                and quarantined.logical_date <= cast(account_ops.logical_ts at time zone 'UTC' as date)
        ) as was_quarantined,
        account_ops.plan_id,
        account_ops.op_id,
        account_ops.run_key,
        account_ops.logical_ts as run_logical_ts
    from account_ops
    cross join first_load
    left join op_versions on op_versions.op_id = account_ops.op_id
    left join known on known.op_id = account_ops.op_id
),

membership_events as (
    select
        'op:' || ops.op_id || ':' || ops.person_id as event_id,
        case when ops.op_type = 'add_members' then 'audience_joined' else 'audience_left' end as event_type,
        ops.person_id,
        ops.person_id as account_person_id,
        cast(null as text) as time_zone,
        ops.logical_ts as target_at,
        'run_that_saw_it' as target_basis,
        ops.logical_ts as hr_known_at,
        false as is_initial_load,
        ops.applied_at + ops.moment_offset as effective_at,
        ops.is_live,
        ops.was_held,
        ops.went_through_escrow,
        false as was_quarantined,
        ops.plan_id,
        ops.op_id,
        ops.run_key,
        ops.logical_ts as run_logical_ts
    from ops
    where ops.op_type in ('add_members', 'remove_members')
),

assignment_events as (
    select
        'assignment:' || assignments.person_id || ':' || assignments.requirement_id || ':' || assignments.assigned_on
            as event_id,
        'assignment_due' as event_type,
        assignments.person_id,
        cast(null as text) as account_person_id,
        effective.effective_time_zone as time_zone,
        cast(assignments.due_on + 1 as timestamp) at time zone effective.effective_time_zone as target_at,
        'due_date_end' as target_basis,
        cast(assignments.assigned_on as timestamp) at time zone effective.effective_time_zone as hr_known_at,
        false as is_initial_load,
        cast(assignments.assigned_on as timestamp) at time zone effective.effective_time_zone as effective_at,
        cast(null as boolean) as is_live,
        false as was_held,
        false as went_through_escrow,
        false as was_quarantined,
        cast(null as bigint) as plan_id,
        cast(null as bigint) as op_id,
        cast(null as text) as run_key,
        cast(null as timestamptz) as run_logical_ts
    from assignment_spells as assignments
    inner join effective_workers as effective on effective.person_id = assignments.person_id
    where assignments.due_on is not null
),

builds as not materialized (
    select
        stages.run_key,
        stages.started_at,
        stages.started_at + stages.seconds * interval '1 second' as ended_at,
        runs.moment_offset,
        runs.is_live,
        runs.logical_ts
    from stage_runs as stages
    inner join pipeline_runs as runs on runs.run_key = stages.run_key
    where stages.stage = 'transform' and not stages.detail ? 'error' and not stages.detail ? 'skipped'
),

completion_events as (
    select
        'xapi:' || statements.statement_id as event_id,
        'completion_visible' as event_type,
        statements.actor_account_name as person_id,
        statements.actor_account_name as account_person_id,
        cast(null as text) as time_zone,
        statements.stored + built.moment_offset as target_at,
        'lrs_stored' as target_basis,
        statements.stored + built.moment_offset as hr_known_at,
        false as is_initial_load,
        built.ended_at + built.moment_offset as effective_at,
        built.is_live,
        false as was_held,
        false as went_through_escrow,
        false as was_quarantined,
        cast(null as bigint) as plan_id,
        cast(null as bigint) as op_id,
        built.run_key,
        built.logical_ts as run_logical_ts
    from statements
    inner join pulls on pulls.pull_id = statements.pull_id
    inner join lateral (
        select builds.* from builds
        where builds.started_at >= statements.loaded_at
        order by builds.started_at
        limit 1
    ) as built on true
    where statements.stored is not null
        and statements.verb_id ~ '/(completed|passed)$'
),

events as (
    select * from account_events
    union all
    select * from membership_events
    union all
    select * from assignment_events
    union all
    select * from completion_events
),

judged as (
    select
        events.*,
        case
            when events.event_type = 'access_granted' then events.effective_at <= events.target_at
            when events.event_type = 'access_removed' and events.target_basis = 'last_day_end'
                then events.effective_at
                <= events.target_at + interval '{{ var("access_removal_bound_hours") }} hours'
            when events.event_type = 'assignment_due' then events.effective_at <= events.target_at
        end as on_time
    from events
),

final as (
    select
        event_id,
        event_type,
        person_id,
        account_person_id,
        time_zone,
        target_at,
        target_basis,
        effective_at,
        round(cast(extract(epoch from effective_at - target_at) / 3600 as numeric), 2) as latency_hours,
        on_time,
        hr_known_at,
        case
            when is_initial_load then 'initial_load'
            -- a leaver HR sent on their last day's end can still be deactivated within the bound: on time
            when on_time then 'on_time'
            when event_type in ('access_granted', 'access_removed') and hr_known_at >= target_at then 'hr_late'
            when was_quarantined then 'quarantined_row'
            when was_held then 'held_plan'
            when went_through_escrow then 'escrow'
            else 'pipeline'
        end as cause,
        case when is_live then 'lms_write_time' when is_live is not null then 'logical_moment_plus_elapsed' end
            as effective_basis,
        plan_id,
        op_id,
        run_key,
        run_logical_ts
    from judged
)

select * from final
