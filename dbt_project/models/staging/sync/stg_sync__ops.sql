-- The writes the LMS confirmed (status applied); a membership op has one row per member.
with ops as (
    select * from {{ source('sync', 'ops') }}
    where status = 'applied' and applied_at is not null
)

select
    op_id,
    plan_id,
    op_type,
    coalesce(person_id, member) as person_id,
    group_key,
    attempts,
    escrow_attempts is not null as went_through_escrow,
    applied_at
from ops
left join lateral unnest(case when op_type in ('add_members', 'remove_members') then members end) as member on true
