-- Compliance per person × requirement on the run's logical date (each worker's local date), for every
-- open assignment. The completion that counts is the latest completion event (completed, passed,
-- satisfied, waived) of the person's LMS account for the requirement, whenever it happened: an earlier
-- completion is never lost on a transfer or rehire. For a recurring requirement it expires
-- valid_months after its (local) completion day; the renewal window opens window_days before.
-- status (first that applies):
--   exempt      an exemption in force on the local date (person / requirement / rule keys all match)
--   completed   a completion that has not expired (expires_on is the first day it no longer counts)
--   expired     a completion that has expired
--   overdue     no completion and the local date is after due_on (due on D = still fine during D)
--   in_progress no completion, but a progress or failure event (also one from before the assignment:
--               a course started in the LMS before go-live is in progress)
--   not_started otherwise
--
-- Incremental (macros/changed_people.sql): a build with a change set recomputes the rows of its people. The
-- status moves with the calendar only at dates the change set names (due_on + 1, expires_on, an exemption's
-- first day and the day after its last, an event's local day), so a row computed on an earlier date holds
-- until then; the mart view learning_compliance_status adds the run's date (as_of_local_date, as_of_date).
-- The hooks count the rows deleted and written per group for int_learning_compliance_counts
-- (macros/compliance_counts.sql). Indexed on those dates too: the change set (hrlms.warehouse.changes,
-- learning_dates) looks up the rows whose date falls in the span since the last build (1M workers: 2.7 s
-- reading every row, 0.06 s by the indexes), and on account_person_id: lms_desired_group_members reads the
-- requirement audiences of the change set's accounts by it (1M workers, 42,602 people: 0.85 s reading every row).
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    indexes=[{'columns': ['person_id']}, {'columns': ['due_on']}, {'columns': ['expires_on']},
             {'columns': ['renewal_opens_on']}, {'columns': ['account_person_id']}],
    pre_hook=["{{ learning_status_deltas(-1) }}", "{{ delete_changed_people('person_id') }}"],
    post_hook=["{{ learning_status_deltas(1) }}", "{{ person_index('account_person_id') }}", "{{ analyze_built() }}"]
) }}

with assignments as (
    select * from {{ ref('learning_assignments') }}
    where is_open and {{ changed_people_lookup('person_id') }}
),

workers as (
    select * from {{ ref('int_learning_worker_attributes') }}
    where {{ changed_people_lookup('person_id') }}
),

requirements as (
    select * from {{ ref('stg_learning__requirements') }} where ruleset = 'live'
),

exemptions as (
    select * from {{ ref('stg_learning__exemptions') }} where ruleset = 'live'
),

events as (
    select * from {{ ref('int_learning_events') }} where account_person_id is not null
),

base as (
    select
        assignments.assignment_id,
        assignments.person_id,
        workers.account_person_id,
        assignments.requirement_id,
        requirements.requirement_kind,
        requirements.requirement_title,
        requirements.valid_months,
        requirements.window_days,
        assignments.rule_ids,
        assignments.assigned_on,
        assignments.due_on,
        workers.local_date,
        workers.effective_time_zone,
        workers.org_unit_code,
        workers.org_unit_name,
        workers.manager_person_id,
        workers.location_code,
        workers.country,
        workers.job_code,
        workers.job_family
    from assignments
    inner join workers on assignments.person_id = workers.person_id
    inner join requirements on assignments.requirement_id = requirements.requirement_id
),

last_completion as (
    select distinct on (base.assignment_id)
        base.assignment_id,
        events.occurred_at as completed_at,
        events.score,
        events.verb as completion_verb,
        events.source as completion_source
    from base
    inner join events
        on base.account_person_id = events.account_person_id
        and base.requirement_id = events.requirement_id
        and events.event_class = 'completion'
        and cast(events.occurred_at at time zone base.effective_time_zone as date) <= base.local_date
    order by base.assignment_id, events.occurred_at desc, events.event_id
),

activity as (
    select distinct base.assignment_id
    from base
    inner join events
        on base.account_person_id = events.account_person_id
        and base.requirement_id = events.requirement_id
        and events.event_class in ('progress', 'failure')
        and cast(events.occurred_at at time zone base.effective_time_zone as date) <= base.local_date
),

exempt as (
    select distinct on (base.assignment_id)
        base.assignment_id,
        exemptions.reason as exemption_reason,
        exemptions.exempt_until
    from base
    inner join exemptions
        on (exemptions.person_id is null or exemptions.person_id = base.person_id)
        and (exemptions.requirement_id is null or exemptions.requirement_id = base.requirement_id)
        and (exemptions.rule_id is null or exemptions.rule_id = any(string_to_array(base.rule_ids, ',')))
        and (exemptions.exempt_since is null or base.local_date >= exemptions.exempt_since)
        and (exemptions.exempt_until is null or base.local_date <= exemptions.exempt_until)
    order by base.assignment_id, exemptions.exemption_no
),

dated as (
    select
        base.*,
        last_completion.completed_at,
        cast(last_completion.completed_at at time zone base.effective_time_zone as date) as completed_on,
        last_completion.score,
        last_completion.completion_verb,
        last_completion.completion_source,
        case when base.valid_months is not null and last_completion.completed_at is not null then
            cast(cast(last_completion.completed_at at time zone base.effective_time_zone as date)
                + make_interval(months => base.valid_months) as date)
        end as expires_on,
        activity.assignment_id is not null as has_activity,
        exempt.exemption_reason,
        exempt.exempt_until
    from base
    left join last_completion on base.assignment_id = last_completion.assignment_id
    left join activity on base.assignment_id = activity.assignment_id
    left join exempt on base.assignment_id = exempt.assignment_id
),

final as (
    select
        assignment_id,
        person_id,
        account_person_id,
        requirement_id,
        requirement_kind,
        requirement_title,
        rule_ids,
        assigned_on,
        due_on,
        completed_at,
        completed_on,
        score,
        completion_verb,
        completion_source,
        expires_on,
        case when expires_on is not null then expires_on - window_days end as renewal_opens_on,
        case
            when exemption_reason is not null then 'exempt'
            when completed_at is not null and (expires_on is null or local_date < expires_on) then 'completed'
            when completed_at is not null then 'expired'
            when local_date > due_on then 'overdue'
            when has_activity then 'in_progress'
            else 'not_started'
        end as status,
        exemption_reason,
        exempt_until,
        org_unit_code,
        org_unit_name,
        manager_person_id,
        location_code,
        country,
        job_code,
        job_family,
        effective_time_zone
    from dated
)

select * from final
