with org_units as (
    select * from {{ ref('int_org_units_current') }}
),

final as (
    select
        org_unit_code,
        org_unit_name,
        parent_org_unit_code,
        org_unit_type,
        org_unit_status,
        snapshot_id
    from org_units
)

select * from final
