-- The LMS account every person should have on the run's logical date (SCIM core User + enterprise
-- extension), one row per ACCOUNT: person_id is the account's person id (SCIM externalId), which a
-- rehired or converted worker inherits (int_workers_identity). Ambiguous identities are left out until
-- a person resolves them (marts.identity_review). Accounts are never deleted: leavers stay here with
-- is_active = false. manager_person_id is the manager's account, so a manager's rehire keeps the link.
-- Indexed by person: a restricted plan (hrlms.sync.plan) looks up only the accounts that may have changed.
-- Incremental (macros/changed_people.sql): a build with a change set recomputes the accounts of its people
-- (the change set holds the accounts they held in the last build; accounts_of_changed_people, the ones
-- they hold now).
-- depends_on: {{ ref('int_identity_decisions') }}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    indexes=[{'columns': ['person_id']}],
    pre_hook=["{{ lookups_without_nested_loops() }}", "{{ delete_changed_people('person_id', 'person_id') }}"]
) }}

{#- An incremental build starts from the account holders whose accounts the change set touches (`wanted`,
    macro changed_account_holders_cte) and reads each table's rows of those people only (by their person_id index
    when they are few, hashed when they are many), the workers in one scan. The filters read `wanted` through
    the Jinja variable of that name, which sqlfluff does not follow (hence its noqa). -#}
{%- set wanted = changed_account_holders_filter() %}
with {{ changed_account_holders_cte() }}

workers as (
    select * from {{ ref('workers') }} where {{ wanted }}
),

effective as (
    select person_id, access_from_on, access_until_on, is_active from {{ ref('int_workers_effective') }}
    where {{ wanted }}
),

identity as (
    select person_id, account_person_id, is_account_holder from {{ ref('int_workers_identity') }}
    where {{ wanted }}
),

decisions as (
    select person_id, account_person_id, is_ambiguous from {{ ref('int_identity_decisions') }}
),

placed as (
    select person_id, org_unit_name from {{ ref('int_workers_placed') }}
    where {{ wanted }}
),

managers as (
    select person_id, manager_person_id from {{ ref('int_managers_resolved') }}
    where {{ wanted }}
),

-- LMS roles / entitlements of the live rule set's role rules (int_lms_role_matches), sorted. The change set's
-- people are looked up by index (int_learning_worker_attributes.person_id): the view's rule predicates are
-- estimated at 1 row, and with a semi-join on the change set PostgreSQL chose a nested loop of the change set
-- over every match (1M workers: 270 s for 42,602 people; 3 s with the lookup).
roles as (
    select
        person_id,
        array_agg(distinct role order by role) filter (where attribute = 'roles') as roles,
        array_agg(distinct role order by role) filter (where attribute = 'entitlements') as entitlements
    from {{ ref('int_lms_role_matches') }}
    where ruleset = 'live' and {{ changed_people_lookup('person_id') }}
    group by person_id
),

manager_accounts as (
    select
        managers.person_id,
        case when not decisions.is_ambiguous then decisions.account_person_id end as manager_account_person_id
    from managers
    inner join decisions on managers.manager_person_id = decisions.person_id
),

final as (
    select
        identity.account_person_id as person_id,
        coalesce(workers.username, workers.work_email) as user_name,
        workers.first_name as given_name,
        workers.last_name as family_name,
        coalesce(workers.preferred_name, workers.first_name) || ' ' || workers.last_name as display_name,
        workers.work_email as email,
        workers.job_title as title,
        workers.employee_number,
        coalesce(placed.org_unit_name, workers.org_unit_name) as department,
        effective.access_from_on,
        effective.access_until_on,
        effective.is_active,
        manager_accounts.manager_account_person_id as manager_person_id,
        -- the worker's HR fields the outbound mapping may send (hrlms.sync.outbound)
        workers.time_zone,
        workers.country,
        workers.location_code,
        workers.employment_type,
        workers.job_code,
        workers.job_family,
        workers.org_unit_code,
        workers.preferred_name,
        workers.hire_date,
        workers.start_date,
        roles.roles,
        roles.entitlements
    from workers
    inner join effective on workers.person_id = effective.person_id
    inner join identity on workers.person_id = identity.person_id
    left join placed on workers.person_id = placed.person_id
    left join manager_accounts on workers.person_id = manager_accounts.person_id
    left join roles on workers.person_id = roles.person_id
    where identity.is_account_holder
        and {{ changed_people_filter('identity.account_person_id', 'identity.account_person_id') }}
)

select * from final
