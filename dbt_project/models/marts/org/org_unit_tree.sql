-- The resolved org tree, one row per unit (HR's units + the holding unit): effective parent after
-- unknown parents and cycles were cut, level, path from the root, and the unit's head.
with units as (
    select * from {{ ref('int_org_units_resolved') }}
),

heads as (
    select * from {{ ref('int_org_units_headed') }}
),

final as (
    select
        units.org_unit_code,
        units.org_unit_name,
        units.parent_org_unit_code,
        units.hr_parent_org_unit_code,
        units.org_unit_type,
        units.org_unit_status,
        units.level,
        units.path,
        heads.head_person_id,
        heads.head_rule,
        units.is_holding,
        units.has_unknown_parent,
        units.is_in_cycle,
        units.is_cycle_cut,
        units.snapshot_id
    from units
    left join heads on units.org_unit_code = heads.org_unit_code
)

select * from final
