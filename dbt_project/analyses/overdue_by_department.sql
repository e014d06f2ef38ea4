-- Question: which departments have the most overdue required learning today, and since when?
-- For: HR business partners and department heads (the "Overdue by department" table of the
-- compliance report, hrlms.learning.report, without its top-20 cut).
-- Department = the worker's own org unit (not its subtree); overdue = assigned, not completed, past
-- due_on on the worker's local date, not exempt. Units without anything overdue are left out.
-- `dbt compile --select overdue_by_department`, then run target/compiled/hrlms/analyses/... in psql.

with status as (
    select * from {{ ref('learning_compliance_status') }}
),

units as (
    select org_unit_code, parent_org_unit_code, path from {{ ref('org_unit_tree') }}
),

by_unit as (
    select
        org_unit_code,
        org_unit_name,
        count(*) filter (where status = 'overdue') as overdue,
        count(distinct person_id) filter (where status = 'overdue') as people_overdue,
        count(*) as assignments,
        min(due_on) filter (where status = 'overdue') as oldest_due_on,
        string_agg(distinct requirement_id, ', ' order by requirement_id)
            filter (where status = 'overdue') as overdue_requirements
    from status
    group by org_unit_code, org_unit_name
    having count(*) filter (where status = 'overdue') > 0
),

final as (
    select
        by_unit.org_unit_code,
        by_unit.org_unit_name,
        units.parent_org_unit_code,
        units.path as org_path,
        by_unit.overdue,
        by_unit.people_overdue,
        by_unit.assignments,
        round(cast(by_unit.overdue as numeric) / by_unit.assignments, 4) as overdue_share,
        by_unit.oldest_due_on,
        by_unit.overdue_requirements
    from by_unit
    left join units on by_unit.org_unit_code = units.org_unit_code
)

select * from final
order by overdue desc, org_unit_code nulls last
