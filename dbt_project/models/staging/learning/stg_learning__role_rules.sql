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
        active_from,
        active_until
    from source
)

select * from final
