-- Members of the desired LMS groups: the LMS ACCOUNT (person_id = SCIM externalId, through the identity
-- decisions) of ACTIVE workers only (int_workers_effective.is_active, carried by int_workers_placed).
-- 'org:<code>' = the workers placed directly in the unit; 'rollup:<code>' (var org_rollup_groups) =
-- every active worker in the unit's subtree, via the hierarchy bridge.
-- 'req:<requirement_id>' = the audience of a learning requirement: people with an open assignment who
-- are not exempt (learning_compliance_status); LMSs map such groups to enrolment rules.
-- Indexed by person: a restricted plan (hrlms.sync.plan) looks up only the accounts that may have changed; and by
-- group: lms_desired_groups looks up whether a group it may drop or add has a member (macros/lms_groups.sql).
-- Incremental (macros/changed_people.sql): a build with a change set recomputes the memberships of its
-- people's accounts (as lms_desired_users); its pre-hook keeps the groups they leave for lms_desired_groups.
-- depends_on: {{ ref('int_identity_decisions') }}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    indexes=[{'columns': ['person_id']}, {'columns': ['group_key']}],
    pre_hook=["{{ lookups_without_nested_loops() }}", "{{ group_members_left() }}",
              "{{ delete_changed_people('person_id', 'person_id') }}"]
) }}

{#- An incremental build starts from the account holders whose accounts the change set touches (`wanted`, macro
    changed_account_holders_cte, as lms_desired_users) and reads the workers, their place and accounts for them only
    (1M workers: each input was hashed whole for an event of 2 people). sqlfluff does not follow `wanted`. -#}
{%- set wanted = changed_account_holders_filter() %}
with {{ changed_account_holders_cte() }}

workers as (
    select person_id, org_unit_code from {{ ref('workers') }} where {{ wanted }}
),

effective as (
    select person_id from {{ ref('int_workers_placed') }} where is_active and {{ wanted }}
),

accounts as (
    select person_id, account_person_id from {{ ref('int_workers_identity') }}
    where is_account_holder and not is_ambiguous and account_person_id is not null and {{ wanted }}
),

active_workers as (
    select accounts.account_person_id as person_id, workers.org_unit_code
    from workers
    inner join effective on workers.person_id = effective.person_id
    inner join accounts on workers.person_id = accounts.person_id
),

org_members as (
    select 'org:' || org_unit_code as group_key, person_id
    from active_workers
),

rollup_members as (
    {% if org_rollup_groups_on() %}
    select 'rollup:' || bridge.ancestor_org_unit_code as group_key, active_workers.person_id
    from active_workers
    inner join {{ ref('org_unit_hierarchy') }} as bridge
        on active_workers.org_unit_code = bridge.descendant_org_unit_code
    {% else %}
    select cast(null as text) as group_key, cast(null as text) as person_id
    where false
    {% endif %}
),

audience_members as (
    select 'req:' || requirement_id as group_key, account_person_id as person_id
    from {{ ref('learning_compliance_status') }}
    where status <> 'exempt' and account_person_id is not null
        and {{ changed_people_lookup('account_person_id', 'account_person_id') }}
),

final as (
    select group_key, person_id from org_members
    union all
    select group_key, person_id from rollup_members
    union all
    select group_key, person_id from audience_members
)

select * from final
