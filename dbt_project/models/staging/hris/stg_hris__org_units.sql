with source as (
    select * from {{ source('hris', 'org_units') }}
),

hints as (
    select snapshot_id, hints from {{ source('hris', 'snapshots') }} where entity = 'org_units'
),

renamed as (
    select
        source._snapshot_id as snapshot_id,
        source._line_no as line_no,
        nullif(upper(btrim(org_unit_code)), '') as org_unit_code,
        nullif(regexp_replace(btrim(name), '\s+', ' ', 'g'), '') as org_unit_name,
        nullif(upper(btrim(parent_org_unit_code)), '') as parent_org_unit_code,
        nullif(lower(btrim(type)), '') as org_unit_type,
        nullif(btrim(manager_person_id), '') as manager_person_id,
        lower(coalesce(hints.hints -> 'value_maps' -> 'status' ->> nullif(btrim(status), ''),
            nullif(btrim(status), ''), 'active')) as org_unit_status
    from source
    inner join hints on source._snapshot_id = hints.snapshot_id
)

select * from renamed
