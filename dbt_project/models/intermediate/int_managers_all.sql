-- Every manager relation HR gives, for BI: primary, matrix (secondary, one row per listed id) and
-- temporary. is_effective: the relation applies on the worker's local date (a temporary manager within
-- its dates; the primary manager unless a temporary one applies; matrix managers always).
-- `resolved` not materialized: a reader's filter on person_id (an incremental build's data tests read the
-- change set's people) reaches int_managers_resolved's person_id index in each branch, instead of every
-- worker's row being materialized first (1M workers: ~1 s per test)
with resolved as not materialized (
    select
        person_id,
        primary_manager_person_id,
        temporary_manager_person_id,
        is_temporary_in_force,
        secondary_manager_person_ids
    from {{ ref('int_managers_resolved') }}
),

workers as (
    select person_id, is_active from {{ ref('int_workers_placed') }}
),

relations as (
    select person_id, primary_manager_person_id as manager_person_id, 'primary' as relation,
        not is_temporary_in_force as is_effective
    from resolved
    where primary_manager_person_id is not null
    union all
    select person_id, temporary_manager_person_id, 'temporary', is_temporary_in_force
    from resolved
    where temporary_manager_person_id is not null
    union all
    select distinct resolved.person_id, btrim(matrix.manager_person_id), 'matrix', true
    from resolved
    cross join lateral unnest(string_to_array(resolved.secondary_manager_person_ids, ';')) as matrix (manager_person_id)
    where btrim(matrix.manager_person_id) <> ''
),

final as (
    select
        relations.person_id,
        relations.manager_person_id,
        relations.relation,
        relations.is_effective,
        managers.person_id is not null as is_manager_known,
        coalesce(managers.is_active, false) as is_manager_active
    from relations
    left join workers as managers on relations.manager_person_id = managers.person_id
)

select * from final
