-- Warehouse objects owned by the Python tasks (dbt owns staging/intermediate/marts).
-- Idempotent: run at the start of every task that writes.
create schema if not exists raw_hris;
create schema if not exists dq;
create schema if not exists sync;
create schema if not exists hrlms_util;

-- What arrived, as it arrived. One row per loaded file / HTTP extract; the same bytes twice is a no-op.
create table if not exists raw_hris.snapshots (
    snapshot_id   bigint generated always as identity primary key,
    entity        text        not null,           -- workers | org_units
    source_kind   text        not null,           -- file | http
    source_uri    text        not null,
    checksum      text        not null,           -- sha256 of the bytes that arrived
    mapping_name  text        not null,
    hints         jsonb       not null,           -- date_format (Postgres to_date pattern), value_maps
    source_columns jsonb      not null,           -- canonical field -> source column, as mapped
    row_count     bigint      not null,
    logical_date  date        not null,           -- the run that loaded it
    extracted_at  timestamptz not null,           -- file mtime / HTTP response time
    loaded_at     timestamptz not null default clock_timestamp(),
    unique (entity, checksum)
);

create table if not exists raw_hris.workers (
    _snapshot_id      bigint not null,
    _line_no          bigint not null,             -- physical line in the source file (header = 1) / record no.
    person_id         text,
    employee_number   text,
    first_name        text,
    last_name         text,
    preferred_name    text,
    work_email        text,
    username          text,
    employment_status text,
    employment_type   text,
    hire_date         text,
    start_date        text,
    termination_date  text,
    last_day_of_work  text,
    job_code          text,
    job_title         text,
    job_family        text,
    org_unit_code     text,
    manager_person_id text,
    location_code     text,
    country           text,
    time_zone         text
);
-- a snapshot's lines, and a few of them by number (an event run's lines: staging, hrlms.sources.events)
create index if not exists workers_snapshot_line_idx on raw_hris.workers (_snapshot_id, _line_no);
drop index if exists raw_hris.workers_snapshot_idx;
alter table raw_hris.workers
    add column if not exists secondary_manager_person_ids text,
    add column if not exists temporary_manager_person_id text,
    add column if not exists temporary_manager_from text,
    add column if not exists temporary_manager_until text;

create table if not exists raw_hris.org_units (
    _snapshot_id          bigint not null,
    _line_no              bigint not null,
    org_unit_code         text,
    name                  text,
    parent_org_unit_code  text,
    type                  text,
    status                text
);
-- The size in bytes of a landed file: a file whose size no snapshot of its entity has cannot be a
-- duplicate, so it is hashed on its way into COPY instead of by a read of its own (sources.files).
alter table raw_hris.snapshots add column if not exists byte_size bigint;
create index if not exists org_units_snapshot_idx on raw_hris.org_units (_snapshot_id);
alter table raw_hris.org_units add column if not exists manager_person_id text;

-- Line numbers for COPY: restarted per load under an exclusive lock.
create sequence if not exists raw_hris.load_line_seq;

-- Tolerant date parsing for staging: NULL instead of an error, so one bad value cannot fail a build;
-- the quality gate reports it (raw text present, parsed value missing).
create or replace function hrlms_util.try_date(v text, fmt text) returns date
-- parallel unsafe: its EXCEPTION block starts a subtransaction, which a parallel plan cannot (dbt
-- failed with "cannot start subtransactions during a parallel operation" from ~100k workers on)
language plpgsql immutable parallel unsafe as $$
declare d date;
begin
    if v is null or btrim(v) = '' then return null; end if;
    d := to_date(btrim(v), coalesce(fmt, 'YYYY-MM-DD'));
    if extract(year from d) < 1000 or extract(year from d) > 9999 then return null; end if;
    return d;
exception when others then
    return null;
end $$;

-- Quality gate results: one row per snapshot and suite; quarantined rows with the rule that caught them.
create table if not exists dq.gate_runs (
    snapshot_id   bigint      not null,
    suite         text        not null,
    success       boolean     not null,
    statistics    jsonb       not null,
    failures      jsonb       not null,
    checked_at    timestamptz not null default clock_timestamp(),
    primary key (snapshot_id, suite)
);

create table if not exists dq.quarantine (
    snapshot_id   bigint not null,
    entity        text   not null,
    line_no       bigint not null,
    rule          text   not null,      -- named GX expectation (meta.rule)
    record_key    text,                 -- person_id / org_unit_code as it arrived
    field         text,
    value         text,
    reason        text   not null,
    primary key (snapshot_id, entity, line_no, rule)
);
-- The other person of a shared-value defect (duplicate_email, duplicate_username,
-- duplicate_employee_number): who keeps the value — the account that holds it in the LMS, else the
-- person who had it in the last good snapshot, else the earliest hired (hrlms.quality.gate).
alter table dq.quarantine add column if not exists related_key text;

-- Per gate run: worker lines whose work e-mail, LMS userName or employee number another person holds
-- (in the snapshot or in the LMS); the gate's view exposes them as columns its GX checks read.
create table if not exists dq.gate_key_conflicts (
    snapshot_id   bigint not null,
    line_no       bigint not null,
    rule          text   not null,      -- duplicate_email | duplicate_username | duplicate_employee_number
    value         text   not null,      -- the shared value, as staged
    held_by       text   not null,      -- the person (or LMS account's externalId) who keeps it
    primary key (snapshot_id, line_no, rule)
);

-- Sync: plans, ops, what we know the LMS holds.
create table if not exists sync.plans (
    plan_id       bigint generated always as identity primary key,
    logical_date  date        not null,
    snapshot_id   bigint      not null,
    status        text        not null default 'planned',  -- planned | applied | partial | superseded
    counts        jsonb       not null default '{}',
    created_at    timestamptz not null default clock_timestamp(),
    finished_at   timestamptz
);

create table if not exists sync.ops (
    op_id          bigint generated always as identity primary key,
    plan_id        bigint not null references sync.plans,
    person_id      text   not null,
    op_type        text   not null,     -- create_user | update_user | deactivate_user | reactivate_user
                                        -- | set_manager | create_group | update_group | add_members | remove_members
    changed_fields text[] not null default '{}',
    payload        jsonb  not null,     -- the desired row (create sends it all, updates send changed_fields)
    verify_first   boolean not null default false, -- an earlier attempt's outcome is unknown: look up first
    status         text   not null default 'pending', -- pending | sending | applied | escrow | dead_letter | superseded
    attempts       int    not null default 0,
    http_status    int,
    last_error     text,
    lms_id         text,
    applied_at     timestamptz
);
create index if not exists ops_plan_status_idx on sync.ops (plan_id, status);
create index if not exists ops_person_idx on sync.ops (person_id);

create table if not exists sync.applied_users (
    person_id      text primary key,
    lms_id         text not null,
    user_name      text not null,
    given_name     text,
    family_name    text,
    display_name   text,
    email          text,
    title          text,
    employee_number text,
    department     text,
    is_active      boolean not null,
    last_op_id     bigint,
    applied_at     timestamptz not null default clock_timestamp()
);

-- Managers and groups (second pass). Group ops carry group_key (+ members: a chunk of person ids) and
-- no person_id; phase 1 = user ops + create_group/update_group, phase 2 = set_manager, add_members,
-- remove_members (claimed only once no phase-1 op of the plan is pending or sending).
alter table sync.ops alter column person_id drop not null;
alter table sync.ops
    add column if not exists group_key text,
    add column if not exists members   text[],
    add column if not exists phase     smallint not null default 1;
create index if not exists ops_group_idx on sync.ops (group_key) where group_key is not null;
alter table sync.applied_users add column if not exists manager_person_id text;  -- as set in the LMS
-- The gate's shared-value checks (hrlms.quality.gate.KEY_CONFLICTS_SQL) look up the few changed values of a
-- snapshot among the accounts: by index, not by sorting every account (and ANALYZE keeps statistics on
-- the lower() expressions only through these indexes: without them the planner guesses and merge-joins)
create index if not exists applied_users_lower_email_idx on sync.applied_users (lower(email));
create index if not exists applied_users_lower_user_name_idx on sync.applied_users (lower(user_name));
create index if not exists applied_users_employee_number_idx on sync.applied_users (employee_number);

-- What a later gate may take from an earlier one (hrlms.quality.gate._key_check_delta): per workers snapshot
-- gated, the values two people claimed (shared) and the moment the accounts were read (accounts_as_of: no
-- account write was in flight). A later snapshot whose lines all repeat that one's, but a few, looks up only
-- those values, the few lines' and the values of accounts written since — not every line (seconds at 1M).
create table if not exists dq.gate_key_checks (
    snapshot_id     bigint      primary key,
    accounts_as_of  timestamptz not null,
    shared          jsonb       not null      -- [[kind, value], ...]: kind work_email | user_name | employee_number
);
-- Accounts written since a moment: their values may be claimed anew (every write of a key sets applied_at).
create index if not exists applied_users_applied_at_idx on sync.applied_users (applied_at);
-- A deleted account can free a value its person's line kept (not a conflict while the account held it):
-- the last delete's moment, so that a gate after it checks every line again.
create table if not exists sync.account_deletes (
    one      boolean     primary key default true check (one),
    last_at  timestamptz not null
);
create or replace function sync.note_account_delete() returns trigger language plpgsql as $$
begin
    insert into sync.account_deletes (last_at) values (clock_timestamp())
    on conflict (one) do update set last_at = excluded.last_at;
    return null;
end $$;
create or replace trigger applied_users_delete_noted after delete or truncate on sync.applied_users
    for each statement execute function sync.note_account_delete();

create table if not exists sync.applied_groups (
    group_key      text primary key,     -- = the group's externalId in the LMS
    lms_id         text not null,
    display_name   text,
    last_op_id     bigint,
    applied_at     timestamptz not null default clock_timestamp()
);

create table if not exists sync.applied_memberships (
    group_key      text not null,
    person_id      text not null,
    last_op_id     bigint,
    applied_at     timestamptz not null default clock_timestamp(),
    primary key (group_key, person_id)
);
create index if not exists applied_memberships_person_idx on sync.applied_memberships (person_id);

-- Stage timings and counts per run (what the run summary and report show).
create schema if not exists audit;
create table if not exists audit.stage_runs (
    run_key       text        not null,   -- <dag run id> or cli-<logical date>
    logical_date  date        not null,
    stage         text        not null,
    started_at    timestamptz not null,
    seconds       numeric     not null,
    detail        jsonb       not null default '{}',
    primary key (run_key, stage)
);

-- Identity review: a person decides what an ambiguous match means (see docs/people-rules.md).
--   resolution 'link': person_id gets the LMS account of account_person_id (a rehire/conversion)
--   resolution 'new' : person_id is a new person and gets an account of its own
create table if not exists sync.identity_resolutions (
    person_id          text primary key,
    resolution         text not null check (resolution in ('link', 'new')),
    account_person_id  text,
    resolved_by        text not null,
    resolved_at        timestamptz not null default clock_timestamp(),
    note               text,
    check (resolution = 'new' or account_person_id is not null)
);

-- person_id -> LMS account (externalId) decided by dbt's identity model, or nothing before its first
-- build: lets the planner protect the account of a quarantined person without depending on dbt.
create or replace function hrlms_util.identity_accounts()
returns table (person_id text, account_person_id text)
language plpgsql stable as $$
begin
    if to_regclass('intermediate.int_identity_decisions') is null then
        return;
    end if;
    return query execute
        'select person_id::text, account_person_id::text from intermediate.int_identity_decisions
         where account_person_id is not null';
end $$;
