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
        match_all,
        job_codes,
        job_families,
        (select array_agg(upper(c)) from unnest(org_subtrees) as c) as org_subtrees,
        locations,
        (select array_agg(upper(c)) from unnest(countries) as c) as countries,
        employment_types,
        people_manager,
        min_tenure_days,
        max_tenure_days,
        hired_on_or_after,
        hired_before,
        due_days,
        due_after,
        active_from,
        active_until
    from source
)

select * from final
