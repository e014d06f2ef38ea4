-- Every learning event that came back (xAPI statements and transcript rows), exactly once per event
-- id however often it was pulled or exported; attributed to the LMS account and its current holder.
with events as (
    select * from {{ ref('int_learning_events') }}
),

requirements as (
    select requirement_id, requirement_title from {{ ref('stg_learning__requirements') }} where ruleset = 'live'
),

final as (
    select
        events.event_id,
        events.source,
        events.account_person_id,
        events.person_id,
        events.learner_email,
        events.requirement_id,
        requirements.requirement_title,
        events.verb,
        events.event_class,
        events.occurred_at,
        events.score,
        events.is_success
    from events
    left join requirements on events.requirement_id = requirements.requirement_id
)

select * from final
