-- The LMS groups that should exist on the run's date: 'org:<code>' for every org unit (holding unit
-- included) with at least one active direct member; with var org_rollup_groups, also 'rollup:<code>'
-- for every unit with at least one active worker anywhere in its subtree; 'req:<id>' (an audience)
-- for every live learning requirement with at least one member.
-- Kept by difference (macros/lms_groups.sql): a group the table holds that lost no member is kept without looking
-- at the memberships; the other candidates are looked up in them by group_key. Rollups only with org_rollup_groups.
{{ config(post_hook="delete from {{ audit_table('group_members_left') }}") }}
{%- set carried = lms_groups_carried() %}
with units as (
    select org_unit_code, org_unit_name from {{ ref('org_unit_tree') }}
),

memberships as (
    -- (unaliased: `dbt build --empty` turns a ref into a subquery with an alias of its own; used once, inlined)
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

rollup_groups as (  -- noqa: ST03
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

candidates as (
    select * from org_groups
    {%- if org_rollup_groups_on() %}
    union all
    select * from rollup_groups
    {%- endif %}
    union all
    select * from audience_groups
),

{%- if carried %}

left_groups as (
    select distinct group_key from {{ audit_table('group_members_left') }} where group_key is not null
),

judged as materialized (
    -- held: the table has the group and no member left it since; the others are looked up (materialized: each
    -- row's verdict computed once, by hash joins, not again inside the lookup below)
    select
        candidates.*,
        (built.group_key is not null and left_groups.group_key is null) as held
    from candidates
    left join {{ this }} as built on candidates.group_key = built.group_key
    left join left_groups on candidates.group_key = left_groups.group_key
),

final as (
    select judged.group_key, judged.display_name, judged.group_kind, judged.org_unit_code
    from judged
    -- one index lookup per group not held, any one member will do (a lateral join with a limit: an exists
    -- here would hash every membership)
    left join lateral (
        select true as found
        from memberships
        where not judged.held and memberships.group_key = judged.group_key
        limit 1  -- noqa: AM09
    ) as probe on true
    where judged.held or probe.found
)
{%- else %}

final as (
    select candidates.*
    from candidates
    where exists (select 1 from memberships where memberships.group_key = candidates.group_key)
)
{%- endif %}

select * from final
