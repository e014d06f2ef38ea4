-- Compliance counts on the run's date by org subtree (a unit and everything below it, through the
-- hierarchy bridge), by direct manager, by location and by job code; per requirement and for all
-- requirements together (requirement_id = '*'). completion_rate = completed / (assigned - exempt).
-- A view: the counts are int_learning_compliance_counts (kept by difference, only the groups a build touches
-- are rewritten); the labels are today's unit and manager names; as_of_date is the run's date.
{{ config(materialized='view') }}

with counts as (
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
    from {{ ref('int_learning_compliance_counts') }}
    where dimension <> 'unit'
),

units as (
    select org_unit_code, org_unit_name from {{ ref('org_unit_tree') }}
),

people as (
    select person_id, first_name, last_name from {{ ref('workers') }}
),

final as (
    select
        counts.dimension,
        counts.dimension_value,
        case counts.dimension
            when 'org_subtree' then units.org_unit_name
            when 'manager' then people.first_name || ' ' || people.last_name
            else counts.dimension_value
        end as dimension_label,
        counts.requirement_id,
        counts.assigned,
        counts.completed,
        counts.in_progress,
        counts.not_started,
        counts.overdue,
        counts.expired,
        counts.exempt,
        round(cast(counts.completed as numeric) / nullif(counts.assigned - counts.exempt, 0), 4) as completion_rate,
        cast('{{ run_param("logical_date") }}' as date) as as_of_date
    from counts
    left join units on counts.dimension = 'org_subtree' and counts.dimension_value = units.org_unit_code
    left join people on counts.dimension = 'manager' and counts.dimension_value = people.person_id
)

select * from final
