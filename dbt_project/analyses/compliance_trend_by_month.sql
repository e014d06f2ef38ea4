-- Question: how has compliance developed month by month, overall and per requirement?
-- For: HR leadership and auditors (month-end snapshots; the "Month-end trend" table of the
-- compliance report, hrlms.learning.report, split by requirement).
-- From learning_compliance_monthly: one row per month-end × requirement plus requirement_id '*' for
-- all requirements; completion_rate = completed / (assigned - exempt), as in the rollup.

with monthly as (
    select * from {{ ref('learning_compliance_monthly') }}
),

counted as (
    select
        month_end_on,
        case when grouping(requirement_id) = 1 then '*' else requirement_id end as requirement_id,
        case when grouping(requirement_id) = 1 then 'All requirements' else min(requirement_title) end
            as requirement_title,
        count(*) as assigned,
        count(distinct person_id) as people,
        {{- status_counts() }}
    from monthly
    group by grouping sets ((month_end_on, requirement_id), (month_end_on))
),

final as (
    select
        *,
        round(cast(completed as numeric) / nullif(assigned - exempt, 0), 4) as completion_rate
    from counted
)

select * from final
order by month_end_on, requirement_id = '*' desc, requirement_id
