-- The hierarchy bridge (closure table): one row per (ancestor, descendant) pair of the resolved tree,
-- including depth-0 self rows. path runs from the ancestor down to the descendant ('ORG1/ORG7/ORG9').
{{ config(
    materialized='table',
    pre_hook="set local enable_nestloop = off",
    post_hook="analyze {{ this }}"
) }}

with units as (
    select org_unit_code, parent_org_unit_code from {{ ref('int_org_units_resolved') }}
),

-- Top-down from the roots (the resolved tree has no cycles): each unit's lineage root → unit.
lineages as (
    with recursive tree (org_unit_code, lineage) as (
        select org_unit_code, array[org_unit_code] from units where parent_org_unit_code is null
        union all
        select units.org_unit_code, tree.lineage || units.org_unit_code
        from units
        inner join tree on units.parent_org_unit_code = tree.org_unit_code
        where cardinality(tree.lineage) < 100000
    )
    select * from tree
),

pairs as (
    select
        ancestors.code as ancestor_org_unit_code,
        lineages.org_unit_code as descendant_org_unit_code,
        cast(cardinality(lineages.lineage) - ancestors.position as integer) as depth,
        array_to_string(lineages.lineage[ancestors.position:], '/') as path
    from lineages
    cross join lateral unnest(lineages.lineage) with ordinality as ancestors (code, position)
)

select * from pairs
