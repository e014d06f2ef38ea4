-- Which active worker each rule reaches, for every rule set (a view: the preview command reads the
-- 'preview' rule set through it without a dbt run). A rule matches when every criterion it gives
-- holds (a list = any of its values; org_subtrees = the unit or anything below it, via the hierarchy
-- bridge) and the worker's local date is inside the rule's active_from/active_until.
-- due_basis_on: the date the rule's due period counts from (start, last transfer, else start); null
-- for 'assignment' (the assignment date, known only to learning_assignments).
with workers as (
    select * from {{ ref('int_learning_worker_attributes') }}
    where is_active
),

rules as (
    select * from {{ ref('stg_learning__rules') }}
),

bridge as (
    select ancestor_org_unit_code, descendant_org_unit_code from {{ ref('org_unit_hierarchy') }}
),

matched as (
    select
        rules.ruleset,
        rules.rule_id,
        rules.requirement_id,
        workers.person_id,
        rules.due_days,
        rules.due_after,
        case rules.due_after
            when 'start' then workers.start_date
            when 'transfer' then coalesce(workers.last_transfer_on, workers.start_date)
        end as due_basis_on
    from rules
    inner join workers on
        (rules.job_codes is null or workers.job_code = any(rules.job_codes))
        and (rules.job_families is null or workers.job_family = any(rules.job_families))
        and (rules.locations is null or workers.location_code = any(rules.locations))
        and (rules.countries is null or workers.country = any(rules.countries))
        and (rules.employment_types is null or workers.employment_type = any(rules.employment_types))
        and (rules.people_manager is null or workers.is_people_manager = rules.people_manager)
        and (rules.min_tenure_days is null or workers.tenure_days >= rules.min_tenure_days)
        and (rules.max_tenure_days is null or workers.tenure_days <= rules.max_tenure_days)
        and (rules.hired_on_or_after is null or workers.hire_date >= rules.hired_on_or_after)
        and (rules.hired_before is null or workers.hire_date < rules.hired_before)
        and (rules.active_from is null or workers.local_date >= rules.active_from)
        and (rules.active_until is null or workers.local_date <= rules.active_until)
        and (rules.org_subtrees is null or exists (
            select 1 from bridge
            where bridge.descendant_org_unit_code = workers.org_unit_code
                and bridge.ancestor_org_unit_code = any(rules.org_subtrees)))
)

select * from matched
