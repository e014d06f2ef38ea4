-- Learning requirements of every rule set (live, preview).
with source as (
    select * from {{ source('learning', 'requirements') }}
),

final as (
    select
        ruleset,
        requirement_id,
        kind as requirement_kind,
        title as requirement_title,
        valid_months,
        window_days,
        valid_months is not null as is_recurring
    from source
)

select * from final
