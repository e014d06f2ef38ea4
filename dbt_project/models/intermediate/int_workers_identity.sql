{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    indexes=[{'columns': ['person_id']}, {'columns': ['account_person_id']}],
    pre_hook=["{{ lookups_without_nested_loops() }}", "{{ delete_changed_people('person_id', 'account_person_id') }}"],
    post_hook="{{ analyze_built() }}"
) }}
-- A table (not a view) with fresh statistics: downstream joins plan badly on view estimates.
-- The LMS account of every gated worker of the run (from the durable map int_identity_decisions).
-- Two current workers on one account (e.g. the old and the new person_id in the same file) share it:
-- the account holder is the active one, then the highest person_id; the other is a data issue.
-- Incremental (macros/changed_people.sql): the change set's people and everyone now on one of their
-- accounts (the account's holder may be another); the change set already holds everyone who shared an
-- account with them in the last build (hrlms.warehouse.changes, reason identity). Their rows of the other
-- tables are looked up by the person_id index (1M workers, 42,602 people: the query 2.3 s merging every row).
{%- set lookup = is_incremental() and change_set_id() > 0 %}
with workers as (
    select person_id from {{ ref('int_workers_gated') }}
    {%- if lookup %}
    where person_id = any(array{{ changed_people() }})
        or person_id = any(array(
            select person_id from {{ ref('int_identity_decisions') }}
            where account_person_id in {{ accounts_of_changed_people() }}
        ))
    {%- endif %}
),

effective as (
    select person_id, is_active from {{ ref('int_workers_effective') }}
    {%- if lookup %}
    where person_id = any(array(select person_id from workers))
    {%- endif %}
),

decisions as (
    select * from {{ ref('int_identity_decisions') }}
    {%- if lookup %}
    where person_id = any(array(select person_id from workers))
    {%- endif %}
),

joined as (
    select
        workers.person_id,
        decisions.account_person_id,
        decisions.identity_rule,
        decisions.is_ambiguous,
        decisions.candidate_account_ids,
        decisions.first_seen_on,
        decisions.decided_on,
        effective.is_active
    from workers
    inner join decisions on workers.person_id = decisions.person_id
    inner join effective on workers.person_id = effective.person_id
),

ranked as (
    select
        *,
        case when is_ambiguous then false
            else count(*) over (partition by is_ambiguous, account_person_id) > 1
        end as has_shared_account,
        case when is_ambiguous then false
            else row_number() over (partition by is_ambiguous, account_person_id
                order by is_active desc, person_id desc) = 1
        end as is_account_holder
    from joined
)

select * from ranked
