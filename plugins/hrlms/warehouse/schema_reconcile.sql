-- Reconciliation (hrlms.sync.reconcile): what the LMS really holds vs what we applied.
-- Idempotent: run by hrlms.warehouse.db.bootstrap after schema.sql.

-- One row per reconcile run. counts: findings per kind/object type (+ LMS objects paged, corrections).
create table if not exists sync.reconcile_runs (
    reconcile_id  bigint generated always as identity primary key,
    run_key       text        not null,           -- Airflow run id (or any caller's key)
    remaster      boolean     not null default false,
    status        text        not null default 'running',  -- running | reported | remastered | held | failed
    counts        jsonb       not null default '{}',
    plan_id       bigint,                         -- the remaster's plan (sync.plans), if any
    held_reason   text,                           -- the breaker held that plan
    error         text,
    started_at    timestamptz not null default clock_timestamp(),
    finished_at   timestamptz
);

-- One row per finding of a run.
--   kind: missing   (applied, not in the LMS)           object_type user | group | membership
--         changed   (a managed attribute differs: field, applied_value, lms_value)   user | group
--         unknown   (an LMS object whose externalId we never applied, or none: never modified)
--         duplicate (several LMS objects share one externalId: one row per object)
--         extra     (membership: in the LMS group, not applied; lms_value = person id, or lms:<id>)
--   membership rows: external_id = group_key, lms_id = the group's LMS id, field = 'member',
--   applied_value / lms_value = the member's person id (externalId).
create table if not exists sync.drift (
    drift_id      bigint generated always as identity primary key,
    reconcile_id  bigint      not null references sync.reconcile_runs,
    kind          text        not null check (kind in ('missing', 'changed', 'unknown', 'duplicate', 'extra')),
    object_type   text        not null check (object_type in ('user', 'group', 'membership')),
    external_id   text,
    lms_id        text,
    field         text,
    applied_value text,
    lms_value     text,
    found_at      timestamptz not null default clock_timestamp()
);
create index if not exists drift_reconcile_idx on sync.drift (reconcile_id);
