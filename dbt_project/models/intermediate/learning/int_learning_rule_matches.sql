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
    inner join workers on {{ rule_matches('rules', 'workers', 'bridge') }}
)

select * from matched
