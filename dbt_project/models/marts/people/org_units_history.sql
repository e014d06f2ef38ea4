-- Org units by logical date (SCD2 from snapshots.snap_org_units): names, parents, type and status.
-- A version holds on day D when valid_from_on <= D and (valid_to_on is null or D < valid_to_on).
with versions as (
    select * from {{ ref('snap_org_units') }}
),

dated as (
    select
        versions.*,
        cast(versions.dbt_valid_from as date) as valid_from_on,
        cast(versions.dbt_valid_to as date) as valid_to_on
    from versions
),

final as (
    select
        org_unit_code,
        org_unit_name,
        parent_org_unit_code,
        org_unit_type,
        org_unit_status,
        valid_from_on,
        valid_to_on,
        valid_to_on is null as is_current
    from dated
    where valid_to_on is null or valid_to_on > valid_from_on
)

select * from final
