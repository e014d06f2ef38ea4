-- Compliance counts on the run's date by org subtree (a unit and everything below it, through the
-- hierarchy bridge), by direct manager, by location and by job code; per requirement and for all
-- requirements together (requirement_id = '*'). completion_rate = completed / (assigned - exempt).
--
-- Scale: every figure is a plain row count (no distinct counts), so counts add up. Each dimension is
-- first counted per (value, requirement) straight from the assignments; only the per-(unit,
-- requirement) counts go through the hierarchy bridge and are summed per ancestor, instead of every
-- assignment row being repeated for each ancestor of its unit (2.3M rows × depth at 1M workers). The
-- rows are the same as counting the repeated assignment rows: the sum of the counts over the bridge
-- rows is the count of the joined rows, and a group exists exactly when at least one assignment falls
-- into it (a null unit still matches no bridge row; a null requirement_id is still its own group).
-- `not materialized`: each aggregate reads the table itself (in parallel workers) instead of a copy of
-- the status rows written out first (a CTE used more than once is materialized by default).
with status as not materialized (
    select org_unit_code, manager_person_id, location_code, job_code, requirement_id, status
    from {{ ref('learning_compliance_status') }}
),

bridge as (
    select ancestor_org_unit_code, descendant_org_unit_code from {{ ref('org_unit_hierarchy') }}
),

units as (
    select org_unit_code, org_unit_name from {{ ref('org_unit_tree') }}
),

people as (
    select person_id, first_name, last_name from {{ ref('workers') }}
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
    select 'org_subtree' as dimension, bridge.ancestor_org_unit_code as dimension_value, by_unit.requirement_id,
        by_unit.assigned, by_unit.completed, by_unit.in_progress, by_unit.not_started, by_unit.overdue,
        by_unit.expired, by_unit.exempt
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

counted as (
    select
        dimension,
        dimension_value,
        coalesce(requirement_id, '*') as requirement_id,
        cast(sum(assigned) as bigint) as assigned,
        cast(sum(completed) as bigint) as completed,
        cast(sum(in_progress) as bigint) as in_progress,
        cast(sum(not_started) as bigint) as not_started,
        cast(sum(overdue) as bigint) as overdue,
        cast(sum(expired) as bigint) as expired,
        cast(sum(exempt) as bigint) as exempt
    from by_dimension
    group by grouping sets ((dimension, dimension_value, requirement_id), (dimension, dimension_value))
),

final as (
    select
        counted.dimension,
        counted.dimension_value,
        case counted.dimension
            when 'org_subtree' then units.org_unit_name
            when 'manager' then people.first_name || ' ' || people.last_name
            else counted.dimension_value
        end as dimension_label,
        counted.requirement_id,
        counted.assigned,
        counted.completed,
        counted.in_progress,
        counted.not_started,
        counted.overdue,
        counted.expired,
        counted.exempt,
        round(cast(counted.completed as numeric) / nullif(counted.assigned - counted.exempt, 0), 4) as completion_rate,
        cast('{{ run_param("logical_date") }}' as date) as as_of_date
    from counted
    left join units on counted.dimension = 'org_subtree' and counted.dimension_value = units.org_unit_code
    left join people on counted.dimension = 'manager' and counted.dimension_value = people.person_id
)

select * from final
