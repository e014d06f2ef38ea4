-- One effective manager per gated worker on the run's date (rules in _org__models.yml):
--   chosen = the temporary manager while the worker's local date is within [from, until] (a missing
--   bound is open), else the primary manager. The chosen manager is used when it is an active worker
--   other than the worker and the worker is not where a reporting loop is cut. Otherwise:
--   missing / unknown / self / loop-cut → org chain;
--   inactive → up the chosen manager's own chain (their chosen manager, and so on, skipping inactive
--   people), then the org chain; org chain = head of the worker's unit, then of the parent unit, …,
--   never the worker nor anyone who reports (directly or not) to the worker. Loops in the reporting graph
--   are cut at their smallest person_id.
-- Set-based: recursive CTEs only, no per-row functions.
-- Scale: the row estimates of the recursive CTEs are absurd (costs ~1e20), which made PostgreSQL JIT-compile
-- the whole plan with inlining and optimisation: ~5 s of the 10 s at 100k workers, for no gain (jit off).
-- `workers` is `not materialized` (it is read three times, so it would be): the planner then reads
-- int_workers_placed itself, with its statistics — a materialized CTE has none, and the join to the
-- chosen manager was estimated at N × N / 200 rows (49M at 100k) and done by sorting every worker twice.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    indexes=[{'columns': ['person_id']}],
    pre_hook=["{{ 'select 1' if is_incremental() and change_set_id() > 0 else 'set local enable_nestloop = off' }}",
              "set local jit = off", "{{ delete_changed_people('person_id') }}"],
    post_hook="{{ analyze_built() }}"
) }}
-- Incremental (macros/changed_people.sql): a build with a change set resolves only its people (the change
-- set holds the reports of a manager who changed or left, and people whose org-chain fallback may name
-- another head). Their walks up the graph (macros/manager_walk.sql) replace the recursions over everyone:
-- loops, the cut graph and the chains come from each walk, through the index of int_workers_placed
-- (nested loops on). Nothing stored moves with the calendar alone: is_temporary_in_force changes on a date
-- the change set names (the temporary-manager window), and the local date is not kept.
{%- if is_incremental() and change_set_id() > 0 %}

with changed_workers as (
    select person_id from {{ ref('int_workers_placed') }} where {{ changed_people_lookup('person_id') }}
),

walks as (
    {{ manager_walk('select person_id from changed_workers', ref('int_workers_placed')) }}
),

checked as (
    select
        workers.person_id,
        workers.manager_person_id,
        workers.temporary_manager_person_id,
        workers.temporary_manager_from,
        workers.temporary_manager_until,
        workers.secondary_manager_person_ids,
        workers.org_unit_code,
        {{ temporary_manager_in_force('workers') }} as is_temporary_in_force,
        {{ chosen_manager('workers') }} as chosen_manager_person_id,
        case when {{ temporary_manager_in_force('workers') }} then 'temporary' else 'primary' end as chosen_relation,
        managers.person_id is not null as is_chosen_known,
        coalesce(managers.is_active, false) as is_chosen_active,
        walks.cut_path,
        walks.is_in_loop,
        walks.loop_path,
        walks.cut_person_id
    from changed_workers
    inner join {{ ref('int_workers_placed') }} as workers on changed_workers.person_id = workers.person_id
    inner join walks on changed_workers.person_id = walks.person_id
    left join {{ ref('int_workers_placed') }} as managers on {{ chosen_manager('workers') }} = managers.person_id
),

classified as (
    select
        checked.*,
        case
            when checked.chosen_manager_person_id is null then 'missing_manager'
            when checked.chosen_manager_person_id = checked.person_id then 'self_manager'
            when not checked.is_chosen_known then 'unknown_manager'
            when checked.cut_person_id = checked.person_id then 'manager_loop'
            when not checked.is_chosen_active then 'terminated_manager'
        end as fallback_reason
    from checked
),

-- Up the chain from an inactive chosen manager: the first active person among the next 50 up the cut graph.
climbs as (
    select
        classified.person_id,
        (
            select candidate.id
            from unnest(classified.cut_path[2:51]) with ordinality as candidate (id, step)
            inner join {{ ref('int_workers_placed') }} as up on candidate.id = up.person_id
            where up.is_active and candidate.id <> classified.person_id
            order by candidate.step
            limit 1
        ) as chain_manager_person_id
    from classified
    where not classified.is_chosen_active and cardinality(classified.cut_path) > 1
),

org_candidates as (
    select classified.person_id, heads.head_person_id, bridge.depth
    from classified
    inner join {{ ref('int_org_units_flattened') }} as bridge
        on classified.org_unit_code = bridge.descendant_org_unit_code
    inner join {{ ref('int_org_units_headed') }} as heads on bridge.ancestor_org_unit_code = heads.org_unit_code
    where classified.fallback_reason is not null and heads.head_person_id <> classified.person_id
),

head_walks as (
    {{ manager_walk('select distinct head_person_id as person_id from org_candidates', ref('int_workers_placed')) }}
),

-- The nearest head above the worker who does not report to the worker (within 50 steps up the cut graph).
org_chain as (
    select distinct on (org_candidates.person_id)
        org_candidates.person_id,
        org_candidates.head_person_id as org_manager_person_id
    from org_candidates
    left join head_walks on org_candidates.head_person_id = head_walks.person_id
    where not coalesce(org_candidates.person_id = any(head_walks.cut_path[1:51]), false)
    order by org_candidates.person_id, org_candidates.depth
),
{%- else %}

with workers as not materialized (

    select
        person_id,
        manager_person_id,
        temporary_manager_person_id,
        temporary_manager_from,
        temporary_manager_until,
        secondary_manager_person_ids,
        effective_time_zone,
        is_active
    from {{ ref('int_workers_placed') }}
),

placed as (
    select person_id, org_unit_code from {{ ref('int_workers_placed') }}
),

bridge as (
    select ancestor_org_unit_code, descendant_org_unit_code, depth from {{ ref('int_org_units_flattened') }}
),

heads as (
    select org_unit_code, head_person_id from {{ ref('int_org_units_headed') }} where head_person_id is not null
),

chosen as (
    select
        workers.*,
        {{ temporary_manager_in_force('workers') }} as is_temporary_in_force
    from workers
),

checked as (
    select
        chosen.*,
        case when chosen.is_temporary_in_force then chosen.temporary_manager_person_id
            else chosen.manager_person_id end as chosen_manager_person_id,
        case when chosen.is_temporary_in_force then 'temporary' else 'primary' end as chosen_relation,
        managers.person_id is not null as is_chosen_known,
        coalesce(managers.is_active, false) as is_chosen_active
    from chosen
    left join workers as managers
        on managers.person_id = case when chosen.is_temporary_in_force
            then chosen.temporary_manager_person_id else chosen.manager_person_id end
),

-- The reporting graph: worker → chosen manager, where that manager is another known worker.
edges as (
    select person_id, chosen_manager_person_id as parent_person_id
    from checked
    where is_chosen_known and chosen_manager_person_id <> person_id
),

-- Everyone who reaches the top of a chain; the rest are loop members or report into a loop.
reaching_top as (
    with recursive reach (person_id, steps) as (
        select person_id, 0 from checked
        where not exists (select 1 from edges where edges.person_id = checked.person_id)
        union all
        select edges.person_id, reach.steps + 1
        from edges
        inner join reach on edges.parent_person_id = reach.person_id
        where reach.steps < 100000
    )
    -- group by: resets the planner's (huge) row estimate for the recursive result, which otherwise
    -- makes the hash join below spill into a million batches
    select person_id from reach group by person_id
),

loop_walks as (
    with recursive walk (start_id, next_id, seen) as (
        select edges.person_id, edges.parent_person_id, array[edges.person_id]
        from edges
        where not exists (select 1 from reaching_top where reaching_top.person_id = edges.person_id)
        union all
        select walk.start_id, edges.parent_person_id, walk.seen || edges.person_id
        from walk
        inner join edges on walk.next_id = edges.person_id
        where walk.next_id <> walk.start_id and not walk.next_id = any(walk.seen)
    )
    select
        start_id as person_id,
        min(array_to_string(seen || start_id, '>')) as loop_path,
        min((select min(id) from unnest(seen) as id)) as cut_person_id
    from walk
    where next_id = start_id
    group by start_id
),

-- The graph with every loop cut at its smallest person_id (acyclic).
cut_edges as (
    select edges.*
    from edges
    where not exists (
        select 1 from loop_walks
        where loop_walks.person_id = edges.person_id and loop_walks.cut_person_id = edges.person_id
    )
),

active as (
    select person_id from workers where is_active
),

-- Up the chain from an inactive chosen manager: their chosen manager, and so on, until an active one
-- (at most 50 steps).
climbs as (
    with recursive climb (person_id, candidate_id, steps) as (
        select checked.person_id, cut_edges.parent_person_id, 1
        from checked
        inner join cut_edges on checked.person_id = cut_edges.person_id
        where not checked.is_chosen_active
        union all
        select climb.person_id, cut_edges.parent_person_id, climb.steps + 1
        from climb
        inner join cut_edges on climb.candidate_id = cut_edges.person_id
        where climb.steps < 50
            and not exists (select 1 from active where active.person_id = climb.candidate_id)
    )
    select climb.person_id, (array_agg(climb.candidate_id order by climb.steps))[1] as chain_manager_person_id
    from climb
    inner join active on climb.candidate_id = active.person_id
    where climb.candidate_id <> climb.person_id
    group by climb.person_id
),

classified as (
    select
        checked.*,
        loop_walks.loop_path,
        loop_walks.person_id is not null as is_in_loop,
        case
            when checked.chosen_manager_person_id is null then 'missing_manager'
            when checked.chosen_manager_person_id = checked.person_id then 'self_manager'
            when not checked.is_chosen_known then 'unknown_manager'
            when loop_walks.cut_person_id = checked.person_id then 'manager_loop'
            when not checked.is_chosen_active then 'terminated_manager'
        end as fallback_reason
    from checked
    left join loop_walks on checked.person_id = loop_walks.person_id
),

-- The org chain, only for workers whose chosen manager cannot be used: the nearest head above the
-- worker (own unit first), never the worker nor anyone reporting (directly or not) to the worker.
org_candidates as (
    select placed.person_id, heads.head_person_id, bridge.depth
    from classified
    inner join placed on classified.person_id = placed.person_id
    inner join bridge on placed.org_unit_code = bridge.descendant_org_unit_code
    inner join heads on bridge.ancestor_org_unit_code = heads.org_unit_code
    where classified.fallback_reason is not null and heads.head_person_id <> placed.person_id
),

reports_to_worker as (
    with recursive up (person_id, head_person_id, current_id, steps) as (
        -- the column names are up (...)'s: the head is both head_person_id and the first current_id
        select person_id, head_person_id, head_person_id, 0 from org_candidates  -- noqa: AL08
        union all
        select up.person_id, up.head_person_id, cut_edges.parent_person_id, up.steps + 1
        from up
        inner join cut_edges on up.current_id = cut_edges.person_id
        where up.steps < 50 and up.current_id <> up.person_id
    )
    select person_id, head_person_id from up where current_id = person_id group by person_id, head_person_id
),

org_chain as (
    select distinct on (org_candidates.person_id)
        org_candidates.person_id,
        org_candidates.head_person_id as org_manager_person_id
    from org_candidates
    where not exists (
        select 1 from reports_to_worker
        where reports_to_worker.person_id = org_candidates.person_id
            and reports_to_worker.head_person_id = org_candidates.head_person_id
    )
    order by org_candidates.person_id, org_candidates.depth
),
{%- endif %}

final as (
    select
        classified.person_id,
        case
            when classified.fallback_reason is null then classified.chosen_manager_person_id
            else coalesce(climbs.chain_manager_person_id, org_chain.org_manager_person_id)
        end as manager_person_id,
        case
            when classified.fallback_reason is null then classified.chosen_relation
            when climbs.chain_manager_person_id is not null then 'manager_chain'
            when org_chain.org_manager_person_id is not null then 'org_chain'
            else 'none'
        end as manager_rule,
        classified.fallback_reason,
        classified.chosen_manager_person_id,
        classified.chosen_relation,
        classified.manager_person_id as primary_manager_person_id,
        classified.temporary_manager_person_id,
        classified.temporary_manager_from,
        classified.temporary_manager_until,
        classified.is_temporary_in_force,
        classified.secondary_manager_person_ids,
        climbs.chain_manager_person_id,
        org_chain.org_manager_person_id,
        classified.is_in_loop,
        classified.loop_path
    from classified
    left join climbs on classified.person_id = climbs.person_id
    left join org_chain on classified.person_id = org_chain.person_id
)

select * from final
