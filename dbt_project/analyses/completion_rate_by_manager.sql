-- Question: how complete is the required learning of each manager's direct reports, worst first?
-- For: HR business partners preparing manager follow-ups (the "Completion rate by manager" tables
-- of the compliance report, hrlms.learning.report, with every manager instead of top/bottom 10).
-- completion_rate = completed / (assigned - exempt), over all requirements (rollup requirement '*');
-- managers whose team has only exempt assignments have no rate and come last.

with rollup as (
    select * from {{ ref('learning_compliance_rollup') }}
    where dimension = 'manager' and requirement_id = '*'
),

team as (
    select manager_person_id, count(distinct person_id) as direct_reports
    from {{ ref('learning_compliance_status') }}
    where manager_person_id is not null
    group by manager_person_id
),

final as (
    select
        rollup.dimension_value as manager_person_id,
        rollup.dimension_label as manager_name,
        team.direct_reports,
        rollup.assigned,
        rollup.completed,
        rollup.in_progress,
        rollup.not_started,
        rollup.overdue,
        rollup.expired,
        rollup.exempt,
        rollup.completion_rate,
        rank() over (order by rollup.completion_rate asc nulls last) as rank_lowest_first,
        rollup.as_of_date
    from rollup
    left join team on rollup.dimension_value = team.manager_person_id
)

select * from final
order by completion_rate asc nulls last, assigned desc, manager_person_id
