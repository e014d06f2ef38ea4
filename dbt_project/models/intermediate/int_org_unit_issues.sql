-- Org-level data issues for HR: a parent code that is not in the snapshot (the unit was made a root)
-- and parent cycles (one row per unit on the cycle; value = the cycle and where it was cut).
with units as (
    select * from {{ ref('int_org_units_resolved') }}
),

issues as (
    select org_unit_code, 'unknown_parent' as issue_type, hr_parent_org_unit_code as value
    from units
    where has_unknown_parent
    union all
    -- after the cut, the unit whose parent link was cut is the root of every unit of its cycle
    select org_unit_code, 'cycle', cycle_path || ' (cut: parent of ' || root_org_unit_code || ')'
    from units
    where is_in_cycle
)

select * from issues
