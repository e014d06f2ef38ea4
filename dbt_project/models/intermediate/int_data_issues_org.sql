-- Person-level org and manager issues for HR (one row per worker and issue), for workers that are
-- active on the run date or not yet started (prehire):
--   unknown_org_code (field org_unit_code; the worker was placed in the holding unit)
--   missing_manager  (HR names no manager although someone is above the worker in the org chain)
--   unknown_manager, terminated_manager (not active on the run date), self_manager
--   manager_loop     (every member of a reporting loop; the loop is cut at its smallest person_id)
-- field is manager_person_id, or temporary_manager_person_id when the temporary manager was chosen.
with workers as (
    select person_id, employment_status, is_active from {{ ref('int_workers_placed') }}
),

placed as (
    select * from {{ ref('int_workers_placed') }}
),

-- not materialized: a reader's filter on person_id (the data tests of an incremental build) reaches the
-- person_id index of int_managers_resolved in both branches
managers as not materialized (
    select * from {{ ref('int_managers_resolved') }}
),

in_scope as (
    select person_id from workers where is_active or employment_status = 'prehire'
),

issues as (
    select person_id, 'unknown_org_code' as issue_type, 'org_unit_code' as field, hr_org_unit_code as value,
        'int_workers_placed.unknown_org_code' as check_name
    from placed
    where is_unknown_org_code
    union all
    select person_id, fallback_reason,
        case when chosen_relation = 'temporary' then 'temporary_manager_person_id' else 'manager_person_id' end,
        chosen_manager_person_id, 'int_managers_resolved.' || fallback_reason
    from managers
    where fallback_reason in ('unknown_manager', 'terminated_manager', 'self_manager')
        or (fallback_reason = 'missing_manager' and manager_person_id is not null)
    union all
    select person_id, 'manager_loop',
        case when chosen_relation = 'temporary' then 'temporary_manager_person_id' else 'manager_person_id' end,
        chosen_manager_person_id, 'int_managers_resolved.manager_loop'
    from managers
    where is_in_loop
),

final as (
    select issues.*
    from issues
    where exists (select 1 from in_scope where in_scope.person_id = issues.person_id)
)

select * from final
