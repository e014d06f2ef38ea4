{{ config(
    materialized='table',
    pre_hook="set local enable_nestloop = off",
    post_hook="analyze {{ this }}"
) }}
-- Everything an assignment rule can test, per gated worker of the run, on the worker's own local date
-- (the run's logical moment in the worker's time zone, never now()):
--   is_people_manager = at least one ACTIVE worker has them as effective manager (int_managers_resolved);
--   tenure_days       = local date - (start date, else hire date);
--   last_transfer_on  = the logical date the current (org unit, job code) combination began, from the
--                       SCD2 history; null when the worker never changed unit or job since we know them.
with workers as (
    select * from {{ ref('workers') }}
),

effective as (
    select person_id, {{ local_date_in('effective_time_zone') }} as local_date, is_active, effective_time_zone
    from {{ ref('int_workers_effective') }}
),

identity as (
    select person_id, account_person_id from {{ ref('int_workers_identity') }}
    where is_account_holder and not is_ambiguous
),

managers as (
    select person_id, manager_person_id from {{ ref('int_managers_resolved') }}
),

people_managers as (
    select distinct managers.manager_person_id as person_id
    from managers
    inner join effective on managers.person_id = effective.person_id
    where effective.is_active and managers.manager_person_id is not null
        and managers.manager_person_id <> managers.person_id
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
        effective.local_date,
        effective.effective_time_zone,
        effective.is_active,
        people_managers.person_id is not null as is_people_manager,
        effective.local_date - coalesce(workers.start_date, workers.hire_date) as tenure_days,
        transfers.last_transfer_on
    from workers
    inner join effective on workers.person_id = effective.person_id
    left join identity on workers.person_id = identity.person_id
    left join managers on workers.person_id = managers.person_id
    left join people_managers on workers.person_id = people_managers.person_id
    left join transfers on workers.person_id = transfers.person_id
)

select * from final
