-- Assignment spells: one row per person × requirement × time it was assigned, kept for ever.
-- On each run (the run's logical date, each worker's local date):
--   * a live rule matches and no spell is open  -> a new open spell, assigned_on = the local date;
--   * a spell is open and still matched          -> kept (rules and due date refreshed);
--   * a spell is open and no longer matched      -> ended (ended_on, end_reason) unless the rule set
--     says on_unmatch: keep_assigned and the worker is still active; a leaver's spell always ends.
-- A person whose HR row was quarantined in this run keeps their open spells untouched.
-- rule_ids: the live rules that assign it, comma-separated. Closed spells are never touched again;
-- completions live elsewhere, so nothing is lost on a role change. Rerunning a logical date changes nothing.
-- Every value is a function of the person's inputs, none of the run's date (last_seen_on is the day before
-- ended_on, null while open): a build with a change set (macros/changed_people.sql) recomputes the spells
-- of its people only (their open spells read through the person_id index) and leaves everyone else's rows
-- as they are, which are then the rows a full build would write.
-- due_on: per matching rule, N days after its basis (start / last transfer / assignment); when the
-- rule reaches someone later than basis + N (a new rule, a late transfer record) the N days count
-- from the assignment instead, so nobody is overdue on the day they are assigned. Earliest rule wins.
-- Scale: `workers` and `open_previous` are `not materialized`. Each is read more than once, so
-- PostgreSQL would materialize it, and a materialized CTE has no statistics: the planner estimated
-- the spells at 1.6e9 rows (100k workers) and hashed `open_now` in 256 batches. Nested loops are off
-- because `matches` (a view with rule predicates) is still estimated at 1 row; with the CTEs inlined
-- a nested loop over it never finished. At 100k (with the warehouse's jit = off, docs/deployment.md): day 2
-- 15 s -> 3.7 s, day 1 5.1 s -> 2.8 s, the same rows (md5 of the output) in both. The change set's people are
-- looked up in the worker attributes (and, pushed into the view, in the matches) through the person_id index
-- rather than hash-joined with every row: at 1M (42,602 people) the select 6.0 s -> 2.9 s, the same rows.
-- full_refresh=false: history; a full build (dbt build --full-refresh, hrlms.warehouse.changes) keeps it.
{{ config(
    materialized='incremental',
    unique_key='assignment_id',
    incremental_strategy='delete+insert',
    on_schema_change='append_new_columns',
    full_refresh=false,
    pre_hook="set local enable_nestloop = off",
    post_hook="{{ person_index('person_id') }}"
) }}

{%- set logical_date = "cast('" ~ run_param('logical_date') ~ "' as date)" %}

with settings as (
    select coalesce(max(on_unmatch), 'stop_assigning') as on_unmatch
    from {{ source('learning', 'rule_sets') }}
    where ruleset = 'live'
),

workers as not materialized (
    select person_id, local_date, is_active from {{ ref('int_learning_worker_attributes') }}
    where {{ changed_people_lookup('person_id') }}
),

quarantined as (
    select record_key as person_id from {{ source('dq', 'quarantine') }}
    where snapshot_id = {{ run_param('snapshot_id') }} and entity = 'workers' and record_key is not null
),

requirements as (
    select requirement_id from {{ ref('stg_learning__requirements') }} where ruleset = 'live'
),

matches as (
    select * from {{ ref('int_learning_rule_matches') }}
    where ruleset = 'live' and {{ changed_people_lookup('person_id') }}
),

{% if is_incremental() %}
previous as (
    select * from {{ this }} where {{ changed_people_lookup('person_id') }}
),
{% else %}
previous as (
    select
        cast(null as text) as assignment_id,
        cast(null as text) as person_id,
        cast(null as text) as requirement_id,
        cast(null as date) as assigned_on,
        cast(null as date) as due_on,
        cast(null as text) as rule_ids,
        cast(null as date) as last_seen_on,
        cast(null as boolean) as is_open,
        cast(null as date) as ended_on,
        cast(null as text) as end_reason
    where false
),
{% endif %}

open_previous as not materialized (
    select * from previous where is_open
),

matched_pairs as (
    select person_id, requirement_id, string_agg(distinct rule_id, ',' order by rule_id) as rule_ids
    from matches
    group by person_id, requirement_id
),

kept_unmatched as (
    -- keep_assigned: open spells of active workers stay open although no rule matches any more
    select open_previous.person_id, open_previous.requirement_id, open_previous.rule_ids
    from open_previous
    inner join workers on open_previous.person_id = workers.person_id and workers.is_active
    inner join requirements on open_previous.requirement_id = requirements.requirement_id
    cross join settings
    where settings.on_unmatch = 'keep_assigned'
        and not exists (
            select 1 from matched_pairs
            where matched_pairs.person_id = open_previous.person_id
                and matched_pairs.requirement_id = open_previous.requirement_id
        )
),

wanted as (
    select person_id, requirement_id, rule_ids from matched_pairs
    union all
    select person_id, requirement_id, rule_ids from kept_unmatched
),

spells as (
    select
        coalesce(open_previous.assignment_id,
            md5(wanted.person_id || '|' || wanted.requirement_id || '|' || workers.local_date)) as assignment_id,
        wanted.person_id,
        wanted.requirement_id,
        coalesce(open_previous.assigned_on, workers.local_date) as assigned_on,
        wanted.rule_ids,
        open_previous.due_on as previous_due_on,
        workers.local_date
    from wanted
    inner join workers on wanted.person_id = workers.person_id
    left join open_previous
        on wanted.person_id = open_previous.person_id
        and wanted.requirement_id = open_previous.requirement_id
),

due as (
    select
        spells.assignment_id,
        min(
            case
                when matches.due_basis_on is null
                    or matches.due_basis_on + matches.due_days < spells.assigned_on
                    then spells.assigned_on + matches.due_days
                else matches.due_basis_on + matches.due_days
            end
        ) as due_on
    from spells
    inner join matches
        on spells.person_id = matches.person_id
        and spells.requirement_id = matches.requirement_id
    group by spells.assignment_id
),

open_now as (
    select
        spells.assignment_id,
        spells.person_id,
        spells.requirement_id,
        spells.assigned_on,
        coalesce(due.due_on, spells.previous_due_on) as due_on,
        spells.rule_ids,
        cast(null as date) as last_seen_on,
        true as is_open,
        cast(null as date) as ended_on,
        cast(null as text) as end_reason
    from spells
    left join due on spells.assignment_id = due.assignment_id
),

ended as (
    select
        open_previous.assignment_id,
        open_previous.person_id,
        open_previous.requirement_id,
        open_previous.assigned_on,
        open_previous.due_on,
        open_previous.rule_ids,
        greatest(open_previous.assigned_on, coalesce(workers.local_date, {{ logical_date }}) - 1) as last_seen_on,
        false as is_open,
        coalesce(workers.local_date, {{ logical_date }}) as ended_on,
        case
            when workers.person_id is null or not workers.is_active then 'left'
            when requirements.requirement_id is null then 'requirement_removed'
            else 'no_longer_matched'
        end as end_reason
    from open_previous
    left join workers on open_previous.person_id = workers.person_id
    left join requirements on open_previous.requirement_id = requirements.requirement_id
    where not exists (select 1 from open_now where open_now.assignment_id = open_previous.assignment_id)
        and not exists (select 1 from quarantined where quarantined.person_id = open_previous.person_id)
),

final as (
    select * from open_now
    union all
    select * from ended
)

select * from final
