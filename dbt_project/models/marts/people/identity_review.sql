-- Workers whose identity is ambiguous: the match rules point at more than one earlier LMS account.
-- They are not pushed to the LMS until a person decides, with a row in sync.identity_resolutions:
--   insert into sync.identity_resolutions (person_id, resolution, account_person_id, resolved_by, note)
--   values ('P0000123', 'link', 'P0000042', 'jane.doe', 'rehire, same person');   -- or 'new', null
with identities as (
    select * from {{ ref('int_workers_identity') }}
    where is_ambiguous
),

workers as (
    select * from {{ ref('workers') }}
),

final as (
    select
        identities.person_id,
        workers.employee_number,
        workers.work_email,
        coalesce(workers.preferred_name, workers.first_name) || ' ' || workers.last_name as display_name,
        workers.employment_status,
        identities.identity_rule as matched_rule,
        identities.candidate_account_ids,
        identities.first_seen_on,
        cast('{{ run_param("logical_date") }}' as date) as as_of_date
    from identities
    inner join workers on identities.person_id = workers.person_id
)

select * from final
