-- The LMS groups that should exist on the run's date: 'org:<code>' for every org unit (holding unit
-- included) with at least one active direct member; with var org_rollup_groups, also 'rollup:<code>'
-- for every unit with at least one active worker anywhere in its subtree; 'req:<id>' (an audience)
-- for every live learning requirement with at least one member.
with units as (
    select org_unit_code, org_unit_name from {{ ref('org_unit_tree') }}
),

members as (
    select group_key from {{ ref('lms_desired_group_members') }}
),

org_groups as (
    select
        'org:' || units.org_unit_code as group_key,
        units.org_unit_name as display_name,
        'org' as group_kind,
        units.org_unit_code
    from units
),

rollup_groups as (
    select
        'rollup:' || units.org_unit_code as group_key,
        units.org_unit_name || ' (all)' as display_name,
        'rollup' as group_kind,
        units.org_unit_code
    from units
),

audience_groups as (
    select
        'req:' || requirement_id as group_key,
        requirement_title as display_name,
        'audience' as group_kind,
        cast(null as text) as org_unit_code
    from {{ ref('stg_learning__requirements') }}
    where ruleset = 'live'
),

final as (
    select candidates.*
    from (
        select * from org_groups
        union all
        select * from rollup_groups
        union all
        select * from audience_groups
    ) as candidates
    where exists (select 1 from members where members.group_key = candidates.group_key)
)

select * from final
