-- xAPI statements pulled from the Learning Record Store (hrlms.learning.xapi), as they arrived.
-- Idempotent: run by hrlms.warehouse.db.bootstrap after schema.sql.
create schema if not exists raw_lms;

-- One row per pull. finished_at is null for a pull that crashed: only finished pulls advance the
-- watermark, so the next pull refetches whatever the crashed one had not reached yet.
create table if not exists raw_lms.xapi_pulls (
    pull_id          bigint generated always as identity primary key,
    lrs_url          text        not null,        -- without credentials
    since            timestamptz,                 -- null: everything (first pull)
    until            timestamptz,                 -- null: up to now
    watermark_before timestamptz,                 -- max statement timestamp after the last finished pull
    watermark_after  timestamptz,                 -- max statement timestamp after this pull
    pages            int         not null default 0,
    fetched          int         not null default 0,
    inserted         int         not null default 0,
    started_at       timestamptz not null default clock_timestamp(),
    finished_at      timestamptz,
    run_key          text                          -- Airflow run id (or any caller's key)
);

-- One row per statement id (the LRS's identity): a statement fetched again is a no-op.
create table if not exists raw_lms.xapi_statements (
    statement_id           uuid primary key,
    statement              jsonb       not null,  -- the statement as the LRS returned it
    actor_account_name     text,
    actor_account_homepage text,
    actor_mbox             text,
    verb_id                text,
    object_id              text,
    result_score_scaled    numeric,
    result_success         boolean,
    result_completion      boolean,
    statement_timestamp    timestamptz,            -- when it happened (what LRS since/until filter on)
    stored                 timestamptz,            -- when the LRS stored it
    pull_id                bigint references raw_lms.xapi_pulls (pull_id),
    loaded_at              timestamptz not null default clock_timestamp()
);
create index if not exists xapi_statements_timestamp_idx on raw_lms.xapi_statements (statement_timestamp);
