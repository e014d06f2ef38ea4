-- Breaker, plan review and approval (hrlms.sync.breaker).
-- sync.plans.status: planned | held | approved | applied | partial | superseded | rejected
-- sync.ops.status adds: held (its plan is held) | rejected (its plan was rejected)
alter table sync.plans
    add column if not exists held_reason text,
    add column if not exists review jsonb not null default '{}';

create table if not exists sync.plan_decisions (
    plan_id     bigint not null references sync.plans,
    decision    text   not null check (decision in ('approved', 'rejected')),
    decided_by  text   not null,          -- who triggered it (Airflow run id / user), never a secret
    decided_at  timestamptz not null default clock_timestamp(),
    note        text
);
