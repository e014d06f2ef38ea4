-- The run's org units as one clean tree, rebuilt from the snapshot every run (so a reorg — moved,
-- renamed, merged or closed units — takes effect in one run):
--   * a holding unit (var holding_org_unit_code / holding_org_unit_name) for workers whose org code is
--     missing or unknown; HR's own row wins if the snapshot already has that code;
--   * a parent code that is not in the snapshot → the unit becomes a root (reported: unknown_parent);
--   * parent cycles (A→B→A, A→A) → in each cycle the parent link of the unit with the smallest code is
--     cut and that unit becomes a root (reported: cycle);
--   * level (0 = root), root_org_unit_code and path from the root ('ORG1/ORG7/ORG9').
-- Closed units (status inactive) stay in the tree: their workers stay where HR puts them.
{{ config(
    materialized='table',
    pre_hook="set local enable_nestloop = off",
    post_hook="analyze {{ this }}"
) }}

with org_units as (
    select
        org_unit_code,
        org_unit_name,
        parent_org_unit_code,
        org_unit_type,
        org_unit_status,
        manager_person_id,
        snapshot_id,
        line_no
    from {{ ref('int_org_units_current') }}
),

holding as (
    select
        cast('{{ var("holding_org_unit_code") | replace("'", "''") }}' as text) as org_unit_code,
        cast('{{ var("holding_org_unit_name") | replace("'", "''") }}' as text) as org_unit_name,
        cast(null as text) as parent_org_unit_code,
        cast('holding' as text) as org_unit_type,
        cast('active' as text) as org_unit_status,
        cast(null as text) as manager_person_id,
        cast({{ run_param("org_snapshot_id") }} as bigint) as snapshot_id,
        cast(null as bigint) as line_no
),

units as (
    select * from org_units
    union all
    select * from holding
    where not exists (select 1 from org_units where org_units.org_unit_code = holding.org_unit_code)
),

linked as (
    select
        units.*,
        units.parent_org_unit_code is not null and parents.org_unit_code is null as has_unknown_parent,
        case when parents.org_unit_code is not null then units.parent_org_unit_code end as known_parent_code
    from units
    left join units as parents on units.parent_org_unit_code = parents.org_unit_code
),

-- Units that reach a root by following parents; in a graph where every unit has at most one parent,
-- the others are exactly the cycle members and the units hanging below a cycle. No path arrays here,
-- so this stays cheap for any number of units; it terminates because trees never lead into a cycle.
reaching_root as (
    with recursive reach (org_unit_code, steps) as (
        select org_unit_code, 0 from linked where known_parent_code is null
        union all
        select linked.org_unit_code, reach.steps + 1
        from linked
        inner join reach on linked.known_parent_code = reach.org_unit_code
        where reach.steps < 100000
    )
    select org_unit_code from reach
),

-- From each remaining unit, walk up with the path seen so far; a walk that comes back to its start
-- found the start's cycle.
cycle_walks as (
    with recursive walk (start_code, next_code, seen) as (
        select linked.org_unit_code, linked.known_parent_code, array[linked.org_unit_code]
        from linked
        where not exists (select 1 from reaching_root where reaching_root.org_unit_code = linked.org_unit_code)
        union all
        select walk.start_code, linked.known_parent_code, walk.seen || linked.org_unit_code
        from walk
        inner join linked on walk.next_code = linked.org_unit_code
        where walk.next_code <> walk.start_code and not walk.next_code = any(walk.seen)
    )
    select
        start_code as org_unit_code,
        seen as cycle_codes,
        (select min(code) from unnest(seen) as code) as cut_code
    from walk
    where next_code = start_code
),

resolved as (
    select
        linked.org_unit_code,
        linked.org_unit_name,
        linked.parent_org_unit_code as hr_parent_org_unit_code,
        case when cycle_walks.cut_code = linked.org_unit_code then null else linked.known_parent_code end
            as parent_org_unit_code,
        linked.org_unit_type,
        linked.org_unit_status,
        linked.manager_person_id,
        linked.org_unit_code = '{{ var("holding_org_unit_code") | replace("'", "''") }}' as is_holding,
        linked.has_unknown_parent,
        cycle_walks.org_unit_code is not null as is_in_cycle,
        coalesce(cycle_walks.cut_code = linked.org_unit_code, false) as is_cycle_cut,
        array_to_string(cycle_walks.cycle_codes || linked.org_unit_code, '>') as cycle_path,
        linked.snapshot_id,
        linked.line_no
    from linked
    left join cycle_walks on linked.org_unit_code = cycle_walks.org_unit_code
),

-- Top-down from the roots (acyclic now): each unit's lineage root → unit.
lineages as (
    with recursive tree (org_unit_code, lineage) as (
        select org_unit_code, array[org_unit_code] from resolved where parent_org_unit_code is null
        union all
        select resolved.org_unit_code, tree.lineage || resolved.org_unit_code
        from resolved
        inner join tree on resolved.parent_org_unit_code = tree.org_unit_code
        where cardinality(tree.lineage) < 100000
    )
    select * from tree
),

final as (
    select
        resolved.*,
        cardinality(lineages.lineage) - 1 as level,
        lineages.lineage[1] as root_org_unit_code,
        array_to_string(lineages.lineage, '/') as path
    from resolved
    inner join lineages on resolved.org_unit_code = lineages.org_unit_code
)

select * from final
