-- The org units of this run's org snapshot (first row per code).
with org_units as (
    select * from {{ ref('stg_hris__org_units') }}
    where snapshot_id = {{ run_param('org_snapshot_id') }}
),

deduplicated as (
    select distinct on (org_unit_code) *
    from org_units
    where org_unit_code is not null
    order by org_unit_code, line_no
)

select * from deduplicated
