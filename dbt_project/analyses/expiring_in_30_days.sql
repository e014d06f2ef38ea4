-- Question: whose completions stop counting within the next 30 days (renewals to chase now)?
-- For: L&D administrators and line managers (the "Expiring in the next 30 days" table of the
-- compliance report, hrlms.learning.report, without its 50-row cut).
-- Expiring = status completed (still valid on the worker's local date) and expires_on on or before
-- the logical date + 30 days; only recurring requirements have an expires_on.
-- `dbt compile --select expiring_in_30_days --vars '{logical_date: 2026-01-20}'` (default: the
-- project's logical_date var), then run the compiled SQL in psql.
{% set as_of = run_param('logical_date') %}

with status as (
    select * from {{ ref('learning_compliance_status') }}
    where status = 'completed'
        and expires_on <= date '{{ as_of }}' + 30
),

workers as (
    select person_id, first_name, preferred_name, last_name, work_email from {{ ref('workers') }}
),

final as (
    select
        status.person_id,
        coalesce(nullif(workers.preferred_name, ''), workers.first_name) || ' ' || workers.last_name as display_name,
        workers.work_email,
        status.org_unit_code,
        status.org_unit_name,
        status.manager_person_id,
        coalesce(nullif(managers.preferred_name, ''), managers.first_name) || ' ' || managers.last_name
            as manager_name,
        status.requirement_id,
        status.requirement_title,
        status.completed_on,
        status.expires_on,
        status.renewal_opens_on,
        status.expires_on - date '{{ as_of }}' as days_left
    from status
    left join workers on status.person_id = workers.person_id
    left join workers as managers on status.manager_person_id = managers.person_id
)

select * from final
order by expires_on, person_id, requirement_id
