{{ config(materialized='table', post_hook="analyze {{ this }}") }}
-- Learning events from both back-flows (xAPI statements, transcript exports), one row per event id,
-- attributed to the LMS ACCOUNT (account_person_id = SCIM externalId, stable across rehires) and to
-- the HR person who holds that account in this run (null when nobody does: history is still kept).
-- Learners named only by e-mail are matched on the work e-mail of this run's workers.
-- event_class: completion (completed, passed, satisfied, waived), failure (failed), progress
-- (launched, initialized, attempted, progressed, resumed, …), other.
with statements as (
    select event_id, 'xapi' as source, account_person_id, learner_email, requirement_id, verb, occurred_at,
        score, is_success
    from {{ ref('stg_lms__xapi_statements') }}
),

transcripts as (
    select event_id, 'transcript' as source, account_person_id, learner_email, requirement_id, verb,
        occurred_at, score, case verb when 'passed' then true when 'failed' then false end as is_success
    from {{ ref('stg_lms__transcripts') }}
),

events as (
    select * from statements
    union all
    select * from transcripts
),

workers as (
    select person_id, account_person_id, work_email from {{ ref('int_learning_worker_attributes') }}
    where account_person_id is not null
),

by_email as (
    select distinct on (work_email) work_email, account_person_id
    from workers
    where work_email is not null
    order by work_email, person_id
),

attributed as (
    select
        events.event_id,
        events.source,
        coalesce(events.account_person_id, by_email.account_person_id) as account_person_id,
        events.learner_email,
        events.requirement_id,
        events.verb,
        case
            when events.verb in ('completed', 'passed', 'satisfied', 'waived') then 'completion'
            when events.verb = 'failed' then 'failure'
            when events.verb in ('launched', 'initialized', 'attempted', 'progressed', 'resumed',
                                 'in_progress', 'started', 'terminated', 'abandoned') then 'progress'
            else 'other'
        end as event_class,
        events.occurred_at,
        events.score,
        events.is_success
    from events
    left join by_email on events.account_person_id is null and events.learner_email = by_email.work_email
),

final as (
    select
        attributed.*,
        holders.person_id
    from attributed
    left join workers as holders on attributed.account_person_id = holders.account_person_id
    where attributed.requirement_id is not null and attributed.occurred_at is not null
)

select * from final
