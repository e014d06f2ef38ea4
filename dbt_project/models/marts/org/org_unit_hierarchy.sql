-- Hierarchy bridge for BI and roll-ups: every (ancestor, descendant) pair of the resolved org tree,
-- with depth-0 self rows; path from the ancestor down ('ORG1/ORG7/ORG9').
with bridge as (
    select * from {{ ref('int_org_units_flattened') }}
),

final as (
    select
        ancestor_org_unit_code,
        descendant_org_unit_code,
        depth,
        path
    from bridge
)

select * from final
