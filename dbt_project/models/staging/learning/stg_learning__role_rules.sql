-- LMS role / entitlement rules of every rule set; criteria normalised as in stg_learning__rules.
with source as (
    select * from {{ source('learning', 'role_rules') }}
),

final as (
    select
        ruleset,
        rule_id,
        role,
        attribute,
        description,
        {{ rule_criteria() }},
        active_from,
        active_until
    from source
)

select * from final
