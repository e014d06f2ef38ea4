-- Which active worker each LMS role rule reaches, for every rule set: the same criteria as the learning
-- assignments (macro rule_matches), on the worker's local date. lms_desired_users carries the live rule
-- set's roles and entitlements per account; a role is gone the day its rule stops matching.
with workers as (
    select * from {{ ref('int_learning_worker_attributes') }}
    where is_active
),

rules as (
    select * from {{ ref('stg_learning__role_rules') }}
),

bridge as (
    select ancestor_org_unit_code, descendant_org_unit_code from {{ ref('org_unit_hierarchy') }}
),

matched as (
    select
        rules.ruleset,
        rules.rule_id,
        rules.role,
        rules.attribute,
        workers.person_id
    from rules
    inner join workers on {{ rule_matches('rules', 'workers', 'bridge') }}
)

select * from matched
