-- Compliance counts on the run's date by org subtree (a unit and everything below it, through the
-- hierarchy bridge), by direct manager, by location and by job code; per requirement and for all
-- requirements together (requirement_id = '*'). completion_rate = completed / (assigned - exempt).
--
-- Scale: every figure is a plain row count (no distinct counts), so counts add up. The counts per direct
-- group (unit, manager, location, job; per requirement) are kept by int_learning_status_counts, which an
-- incremental build updates from the status rows it replaced and wrote; here only the per-(unit,
-- requirement) counts go through the hierarchy bridge and are summed per ancestor. The rows are the same
-- as counting the status rows repeated for each ancestor of their unit: the sum of the counts over the
-- bridge rows is the count of the joined rows, and a group exists exactly when at least one assignment
-- falls into it (a null unit, manager, location or job is no group).
with counts as (
    select * from {{ ref('int_learning_status_counts') }}
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

by_dimension as (
    select
        'org_subtree' as dimension,
        bridge.ancestor_org_unit_code as dimension_value,
        counts.requirement_id,
        counts.assigned,
        counts.completed,
        counts.in_progress,
        counts.not_started,
        counts.overdue,
        counts.expired,
        counts.exempt
    from counts
    inner join bridge on counts.dimension_value = bridge.descendant_org_unit_code
    where counts.dimension = 'org_unit'
    union all
    select
        dimension,
        dimension_value,
        requirement_id,
        assigned,
        completed,
        in_progress,
        not_started,
        overdue,
        expired,
        exempt
    from counts
    where dimension <> 'org_unit'
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
