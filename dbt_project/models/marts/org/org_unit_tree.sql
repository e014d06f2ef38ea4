-- The resolved org tree, one row per unit (HR's units + the holding unit): effective parent after
-- unknown parents and cycles were cut, level, path from the root, and the unit's head.
-- Incremental: a build writes only the rows that differ from the table's (an event or hourly build on the same
-- org file: the few units whose head changed; 1M workers' 112,567 units were rewritten in 1.1 s per event run),
-- and its pre-hook deletes the units the run's tree no longer has.
{{ config(
    materialized='incremental',
    unique_key='org_unit_code',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    indexes=[{'columns': ['org_unit_code'], 'unique': true}],
    pre_hook="{{ org_unit_tree_prune() }}"
) }}
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
{%- if is_incremental() %}
where not exists (
    select 1 from {{ this }} as built
    where built.org_unit_code = final.org_unit_code and (built.*) is not distinct from (final.*)
)
{%- endif %}
