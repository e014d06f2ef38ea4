-- Learning history per person for HR (reviews, skills, succession): assignments given and ended, and
-- every learning event of the person's LMS account, in one timeline. Rows of an account that no
-- current worker holds keep person_id null (the account's history is still there).
-- A view: it is the union of learning_assignments and int_learning_events, which are stored already; a
-- table would rewrite every person's timeline on every build.
{{ config(materialized='view') }}

with assignments as (
    select * from {{ ref('learning_assignments') }}
),

events as (
    select * from {{ ref('int_learning_events') }}
),

requirements as (
    select requirement_id, requirement_title from {{ ref('stg_learning__requirements') }} where ruleset = 'live'
),

accounts as (
    select person_id, account_person_id from {{ ref('int_learning_worker_attributes') }}
),

timeline as (
    select assignments.person_id, accounts.account_person_id, assignments.requirement_id,
        cast(assignments.assigned_on as timestamp) at time zone 'UTC' as occurred_at,
        'assigned' as event, 'rules' as source, assignments.rule_ids as detail,
        cast(null as numeric) as score
    from assignments
    left join accounts on assignments.person_id = accounts.person_id
    union all
    select assignments.person_id, accounts.account_person_id, assignments.requirement_id,
        cast(assignments.ended_on as timestamp) at time zone 'UTC', 'unassigned', 'rules', assignments.end_reason,
        null
    from assignments
    left join accounts on assignments.person_id = accounts.person_id
    where not assignments.is_open
    union all
    select events.person_id, events.account_person_id, events.requirement_id, events.occurred_at,
        events.verb, events.source, events.event_id, events.score
    from events
),

final as (
    select
        timeline.person_id,
        timeline.account_person_id,
        timeline.requirement_id,
        requirements.requirement_title,
        timeline.occurred_at,
        timeline.event,
        timeline.source,
        timeline.detail,
        timeline.score
    from timeline
    left join requirements on timeline.requirement_id = requirements.requirement_id
)

select * from final
