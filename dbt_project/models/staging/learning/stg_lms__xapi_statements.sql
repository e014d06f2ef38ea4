-- xAPI statements from the LRS, typed. The learner is the LMS account: account.name under the
-- configured homePage (var xapi_actor_homepage) is the account's person id (SCIM externalId); other
-- actors are matched by mbox e-mail later. The requirement is the activity id after the configured
-- base IRI (var xapi_activity_base); statements about other activities keep a null requirement_id.
-- Voided statements are dropped.
with source as (
    select * from {{ source('lms', 'xapi_statements') }}
),

typed as (
    select
        cast(statement_id as text) as event_id,
        case when actor_account_homepage = '{{ var("xapi_actor_homepage") }}' then actor_account_name end
            as account_person_id,
        nullif(lower(regexp_replace(actor_mbox, '^mailto:', '')), '') as learner_email,
        verb_id,
        lower(regexp_replace(verb_id, '^.*/', '')) as verb,
        object_id,
        case when left(object_id, length('{{ var("xapi_activity_base") }}')) = '{{ var("xapi_activity_base") }}'
            then substr(object_id, length('{{ var("xapi_activity_base") }}') + 1) end as requirement_id,
        result_score_scaled as score,
        result_success as is_success,
        result_completion as is_completion,
        statement_timestamp as occurred_at,
        stored as stored_at
    from source
    where coalesce(statement -> 'verb' ->> 'id', '') <> 'http://adlnet.gov/expapi/verbs/voided'
)

select * from typed
