-- Assignment rules of every rule set; criteria are arrays (null = any value). Codes are compared
-- the way staging normalises worker fields (org unit and country upper-case).
with source as (
    select * from {{ source('learning', 'rules') }}
),

final as (
    select
        ruleset,
        rule_id,
        requirement_id,
        description,
        {{ rule_criteria() }},
        due_days,
        due_after,
        active_from,
        active_until
    from source
)

select * from final
