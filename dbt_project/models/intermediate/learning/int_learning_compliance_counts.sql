-- Compliance counts behind marts.learning_compliance_rollup: per dimension value and requirement (and '*' for
-- all requirements) the assignments by status, over int_learning_status. Dimensions: org_subtree (a unit and
-- everything below it, through int_org_units_flattened), manager, location, job, and unit — the unit's own
-- assignments, kept for the org subtrees' arithmetic (the rollup leaves them out).
--
-- Scale: every figure is a plain row count (no distinct counts), so counts add up. A full build counts each
-- dimension per (value, requirement) straight from the status rows; only the per-(unit, requirement) counts
-- go through the hierarchy bridge and are summed per ancestor. An incremental build (a change set) adds to
-- the groups it touches the counts int_learning_status removed and wrote (audit.learning_status_deltas,
-- macros/compliance_counts.sql) — through the bridge for the org subtrees, plus, for each (ancestor,
-- descendant) pair the hierarchy gained or lost since the counts were last summed
-- (audit.learning_counts_bridge; not compared while the hierarchy table has not been rebuilt since), the
-- descendant unit's own counts added or taken away — and rewrites only those groups (merge on the key).
-- Groups left with no assignment are deleted.
-- `not materialized`: each aggregate reads the table itself instead of a copy of the status rows.
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['dimension', 'dimension_value', 'requirement_id'],
    on_schema_change='fail',
    indexes=[{'columns': ['dimension', 'dimension_value', 'requirement_id'], 'unique': true}],
    post_hook=[
        "delete from {{ this }} where assigned = 0",
        "{{ learning_counts_bridge_keep() }}",
        "delete from {{ audit_table('learning_status_deltas') }}",
        "{{ analyze_built() }}"
    ]
) }}
{%- set statuses = ['completed', 'in_progress', 'not_started', 'overdue', 'expired', 'exempt'] %}
{%- set counts = ['assigned'] + statuses %}

with bridge as (
    select ancestor_org_unit_code, descendant_org_unit_code from {{ ref('int_org_units_flattened') }}
),
{%- if is_incremental() %}

deltas as not materialized (
    select org_unit_code, manager_person_id, location_code, job_code, requirement_id, status, n
    from {{ source('audit', 'learning_status_deltas') }}
),

by_unit as (
    select
        org_unit_code,
        requirement_id,
        sum(n) as assigned,
        {%- for status in statuses %}
        coalesce(sum(n) filter (where status = '{{ status }}'), 0) as {{ status }}{{ ',' if not loop.last }}
        {%- endfor %}
    from deltas
    where org_unit_code is not null
    group by org_unit_code, requirement_id
),

units_before as (
    select dimension_value as org_unit_code, requirement_id, {{ counts | join(', ') }}
    from {{ this }}
    where dimension = 'unit' and requirement_id <> '*'
),

kept_bridge as (
    select ancestor_org_unit_code, descendant_org_unit_code from {{ source('audit', 'learning_counts_bridge') }}
),

-- (nothing to compare while int_org_units_flattened has not been rebuilt since: macros/compliance_counts.sql)
{%- set bridge_current = learning_counts_bridge_current() %}
bridge_gained as (
    select ancestor_org_unit_code, descendant_org_unit_code from bridge
    where not {{ bridge_current }}
    except
    select ancestor_org_unit_code, descendant_org_unit_code from kept_bridge
    where not {{ bridge_current }}
),

bridge_lost as (
    select ancestor_org_unit_code, descendant_org_unit_code from kept_bridge
    where not {{ bridge_current }}
    except
    select ancestor_org_unit_code, descendant_org_unit_code from bridge
    where not {{ bridge_current }}
),

by_dimension as (
    select 'unit' as dimension, org_unit_code as dimension_value, requirement_id,
        {{ counts | join(', ') }}
    from by_unit
    -- org subtrees: the differences through today's hierarchy; a unit's earlier counts added to the
    -- ancestors it gained and taken from those it lost
{%- for pairs, counts_from, sign in [('bridge', 'by_unit', ''), ('bridge_gained', 'units_before', ''),
                                     ('bridge_lost', 'units_before', '-')] %}
    union all
    select 'org_subtree', {{ pairs }}.ancestor_org_unit_code, {{ counts_from }}.requirement_id,
        {%- for c in counts %}
        {{ sign }}{{ counts_from }}.{{ c }}{{ ',' if not loop.last }}
        {%- endfor %}
    from {{ counts_from }}
    inner join {{ pairs }} on {{ counts_from }}.org_unit_code = {{ pairs }}.descendant_org_unit_code
{%- endfor %}
{%- for dimension, column in [('manager', 'manager_person_id'), ('location', 'location_code'),
                              ('job', 'job_code')] %}
    union all
    select '{{ dimension }}', {{ column }}, requirement_id,
        sum(n),
        {%- for status in statuses %}
        coalesce(sum(n) filter (where status = '{{ status }}'), 0){{ ',' if not loop.last }}
        {%- endfor %}
    from deltas where {{ column }} is not null
    group by {{ column }}, requirement_id
{%- endfor %}
),
{%- else %}

status as not materialized (
    select org_unit_code, manager_person_id, location_code, job_code, requirement_id, status
    from {{ ref('int_learning_status') }}
),

by_unit as (
    select
        org_unit_code,
        requirement_id,
        count(*) as assigned,
        {{- status_counts() }}
    from status
    group by org_unit_code, requirement_id
),

by_dimension as (
    select 'unit' as dimension, org_unit_code as dimension_value, requirement_id,
        {{ counts | join(', ') }}
    from by_unit
    where org_unit_code is not null
    union all
    select 'org_subtree', bridge.ancestor_org_unit_code, by_unit.requirement_id,
        {%- for c in counts %}
        by_unit.{{ c }}{{ ',' if not loop.last }}
        {%- endfor %}
    from by_unit
    inner join bridge on by_unit.org_unit_code = bridge.descendant_org_unit_code
{%- for dimension, column in [('manager', 'manager_person_id'), ('location', 'location_code'),
                              ('job', 'job_code')] %}
    union all
    select '{{ dimension }}', {{ column }}, requirement_id,
        count(*) as assigned,
        {{- status_counts() }}
    from status where {{ column }} is not null
    group by {{ column }}, requirement_id
{%- endfor %}
),
{%- endif %}

counted as (
    select
        dimension,
        dimension_value,
        coalesce(requirement_id, '*') as requirement_id,
        {%- for c in counts %}
        cast(sum({{ c }}) as bigint) as {{ c }}{{ ',' if not loop.last }}
        {%- endfor %}
    from by_dimension
    group by grouping sets ((dimension, dimension_value, requirement_id), (dimension, dimension_value))
),
{%- if is_incremental() %}

final as (
    -- the touched groups with their new counts (the groups' earlier counts plus the differences)
    select
        counted.dimension,
        counted.dimension_value,
        counted.requirement_id,
        {%- for c in counts %}
        coalesce(earlier.{{ c }}, 0) + counted.{{ c }} as {{ c }}{{ ',' if not loop.last }}
        {%- endfor %}
    from counted
    left join {{ this }} as earlier
        on counted.dimension = earlier.dimension
            and counted.dimension_value = earlier.dimension_value
            and counted.requirement_id = earlier.requirement_id
    where
        {%- for c in counts %}
        {{ 'or ' if not loop.first }}counted.{{ c }} <> 0
        {%- endfor %}
)
{%- else %}

final as (
    select * from counted
)
{%- endif %}

select * from final
