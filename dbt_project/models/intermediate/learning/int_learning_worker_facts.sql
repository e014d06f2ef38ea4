{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    indexes=[{'columns': ['person_id']}],
    pre_hook=["set local enable_nestloop = off", "{{ delete_changed_people('person_id') }}"],
    post_hook="{{ analyze_built() }}"
) }}
-- What an assignment rule can test, per gated worker of the run, that does not move with the calendar
-- (int_learning_worker_attributes adds the local date and the tenure):
--   is_people_manager = at least one ACTIVE worker has them as effective manager (int_managers_resolved);
--   last_transfer_on  = the logical date the current (org unit, job code) combination began, from the
--                       SCD2 history; null when the worker never changed unit or job since we know them.
-- Incremental (macros/changed_people.sql): a build with a change set recomputes its people (their managers
-- are in it when a report of theirs changed), each input read by its person_id index (1M workers: 1.5 -> 0.3 s
-- for 2 people, 2.2 -> 1.0 s for 42,602, the same rows). Nested loops stay off: with them, the planner's
-- estimates for the change set's people gave a 42,602-people build a plan of 322 s.
with workers as (
    select * from {{ ref('workers') }}
    where {{ changed_people_lookup('person_id') }}
),

effective as (
    select person_id, is_active, effective_time_zone from {{ ref('int_workers_effective') }}
    where {{ changed_people_lookup('person_id') }}
),

identity as (
    select person_id, account_person_id from {{ ref('int_workers_identity') }}
    where is_account_holder and not is_ambiguous and {{ changed_people_lookup('person_id') }}
),

managers as (
    select person_id, manager_person_id from {{ ref('int_managers_resolved') }}
    where {{ changed_people_lookup('person_id') }}
),

-- the reports of the change set's people: anyone (not filtered by the change set)
reports as (
    select person_id, manager_person_id from {{ ref('int_managers_resolved') }}
),

reports_effective as (
    select person_id, is_active from {{ ref('int_workers_effective') }}
),

people_managers as (
    -- the change set's people whom an active worker has as effective manager
    select distinct reports.manager_person_id as person_id
    from reports
    inner join reports_effective on reports.person_id = reports_effective.person_id
    where reports_effective.is_active and reports.manager_person_id is not null
        and reports.manager_person_id <> reports.person_id
        and {{ changed_people_filter('reports.manager_person_id') }}
),

history as (
    select
        person_id,
        valid_from_on,
        lag(org_unit_code) over (partition by person_id order by valid_from_on) as previous_org_unit_code,
        lag(job_code) over (partition by person_id order by valid_from_on) as previous_job_code,
        lag(valid_from_on) over (partition by person_id order by valid_from_on) as previous_valid_from_on,
        org_unit_code,
        job_code
    from {{ ref('workers_history') }}
    where {{ changed_people_lookup('person_id') }}
),

transfers as (
    select person_id, max(valid_from_on) as last_transfer_on
    from history
    where previous_valid_from_on is not null
        and (org_unit_code is distinct from previous_org_unit_code or job_code is distinct from previous_job_code)
    group by person_id
),

final as (
    select
        workers.person_id,
        identity.account_person_id,
        workers.work_email,
        workers.employment_status,
        workers.employment_type,
        workers.job_code,
        workers.job_title,
        workers.job_family,
        workers.org_unit_code,
        workers.org_unit_name,
        workers.location_code,
        workers.country,
        workers.hire_date,
        coalesce(workers.start_date, workers.hire_date) as start_date,
        managers.manager_person_id,
        effective.effective_time_zone,
        effective.is_active,
        people_managers.person_id is not null as is_people_manager,
        transfers.last_transfer_on
    from workers
    inner join effective on workers.person_id = effective.person_id
    left join identity on workers.person_id = identity.person_id
    left join managers on workers.person_id = managers.person_id
    left join people_managers on workers.person_id = people_managers.person_id
    left join transfers on workers.person_id = transfers.person_id
)

select * from final
