-- Compliance counts of int_learning_status per direct group: org unit, manager, location and job code,
-- each per requirement (what learning_compliance_rollup sums over the org hierarchy and over requirements).
-- Incremental: a build with a change set adds the signed rows int_learning_status replaced and wrote
-- (int_learning_status_deltas) to the counts of the groups they touch, instead of counting every status
-- row again; a group whose assignments are all gone is deleted (post-hook), and the applied deltas with it,
-- in the same transaction. A full build (or a build without a change set: the pre-hook empties the table)
-- counts every status row.
-- depends_on: {{ ref('int_learning_status_deltas') }}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['dimension', 'dimension_value', 'requirement_id'],
    on_schema_change='fail',
    indexes=[{'columns': ['dimension', 'dimension_value', 'requirement_id'], 'unique': true}],
    pre_hook="{% if is_incremental() and change_set_id() <= 0 %}delete from {{ this }}{% else %}select 1{% endif %}",
    post_hook=[
        "delete from {{ this }} where assigned = 0",
        "delete from {{ writable(ref('int_learning_status_deltas')) }}",
        "analyze {{ this }}",
    ]
) }}

{%- set statuses = ['completed', 'in_progress', 'not_started', 'overdue', 'expired', 'exempt'] %}
{%- set dimensions = [('org_unit', 'org_unit_code'), ('manager', 'manager_person_id'),
                      ('location', 'location_code'), ('job', 'job_code')] %}
{%- set from_deltas = is_incremental() and change_set_id() > 0 %}

with status_rows as (
{%- if from_deltas %}
    select sign, org_unit_code, manager_person_id, location_code, job_code, requirement_id, status
    from {{ ref('int_learning_status_deltas') }}
{%- else %}
    select 1 as sign, org_unit_code, manager_person_id, location_code, job_code, requirement_id, status
    from {{ ref('int_learning_status') }}
{%- endif %}
),

counted as (
{%- for dimension, column in dimensions %}
    select
        '{{ dimension }}' as dimension,
        {{ column }} as dimension_value,
        requirement_id,
        cast(sum(sign) as bigint) as assigned,
        {%- for status in statuses %}
        cast(coalesce(sum(sign) filter (where status = '{{ status }}'), 0) as bigint) as {{ status }}
        {{- ',' if not loop.last }}
        {%- endfor %}
    from status_rows
    where {{ column }} is not null
    group by {{ column }}, requirement_id
    {%- if not loop.last %}
    union all
    {%- endif %}
{%- endfor %}
),

{%- if from_deltas %}

merged as (
    -- the stored counts of the touched groups plus the deltas (a group at 0 is deleted by the post-hook)
    select
        counted.dimension,
        counted.dimension_value,
        counted.requirement_id,
        coalesce(stored.assigned, 0) + counted.assigned as assigned,
        {%- for status in statuses %}
        coalesce(stored.{{ status }}, 0) + counted.{{ status }} as {{ status }}{{ ',' if not loop.last }}
        {%- endfor %}
    from counted
    left join {{ this }} as stored
        on
            counted.dimension = stored.dimension
            and counted.dimension_value = stored.dimension_value
            and counted.requirement_id = stored.requirement_id
),
{%- else %}

merged as (
    select * from counted
),
{%- endif %}

final as (
    select
        dimension,
        dimension_value,
        requirement_id,
        assigned,
        {%- for status in statuses %}
        {{ status }}{{ ',' if not loop.last }}
        {%- endfor %}
    from merged
)

select * from final
