-- Exemptions of every rule set: each given key must match (person, requirement, rule).
with source as (
    select * from {{ source('learning', 'exemptions') }}
),

final as (
    select
        ruleset,
        exemption_no,
        person_id,
        requirement_id,
        rule_id,
        reason,
        since as exempt_since,
        until as exempt_until
    from source
)

select * from final
