-- Compliance counts on the run's date by org subtree (a unit and everything below it, through the
-- hierarchy bridge), by direct manager, by location and by job code; per requirement and for all
-- requirements together (requirement_id = '*'). completion_rate = completed / (assigned - exempt).
with status as (
    select * from {{ ref('learning_compliance_status') }}
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
    select 'org_subtree' as dimension, bridge.ancestor_org_unit_code as dimension_value, status.*
    from status
    inner join bridge on status.org_unit_code = bridge.descendant_org_unit_code
    union all
    select 'manager', status.manager_person_id, status.* from status where status.manager_person_id is not null
    union all
    select 'location', status.location_code, status.* from status where status.location_code is not null
    union all
    select 'job', status.job_code, status.* from status where status.job_code is not null
),

counted as (
    select
        dimension,
        dimension_value,
        coalesce(requirement_id, '*') as requirement_id,
        count(*) as assigned,
        count(*) filter (where status = 'completed') as completed,
        count(*) filter (where status = 'in_progress') as in_progress,
        count(*) filter (where status = 'not_started') as not_started,
        count(*) filter (where status = 'overdue') as overdue,
        count(*) filter (where status = 'expired') as expired,
        count(*) filter (where status = 'exempt') as exempt
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
        round(counted.completed::numeric / nullif(counted.assigned - counted.exempt, 0), 4) as completion_rate,
        cast('{{ run_param("logical_date") }}' as date) as as_of_date
    from counted
    left join units on counted.dimension = 'org_subtree' and counted.dimension_value = units.org_unit_code
    left join people on counted.dimension = 'manager' and counted.dimension_value = people.person_id
)

select * from final
