-- Change sets (hrlms.warehouse.changes): per build of the transform stage, the people whose HR record
-- changed since the last completed build and the people affected without an edit of their own, with why.
create table if not exists audit.change_sets (
    change_set_id      bigint generated always as identity primary key,
    run_key            text        not null,
    snapshot_id        bigint      not null,
    org_snapshot_id    bigint,
    logical_ts         timestamptz not null,
    inputs             jsonb       not null,  -- what makes a build full when it changes (digests, checksums)
    base_change_set_id bigint,                -- the last completed build this one is compared with
    full_build         boolean     not null,
    built_because      text        not null,
    counts             jsonb       not null default '{}',  -- people per reason
    people             int         not null default 0,
    population         int         not null default 0,
    state              text        not null default 'computed' check (state in ('computed', 'built')),
    created_at         timestamptz not null default clock_timestamp()
);

create table if not exists audit.change_set_people (
    change_set_id bigint not null references audit.change_sets on delete cascade,
    person_id     text   not null,
    reasons       text[] not null,
    primary key (change_set_id, person_id)
);

-- People (HR ids or LMS account ids) whose desired LMS state may differ from what was applied: named by a
-- change set or by a write to sync.applied_* outside a plan (reconcile), cleared when a plan that covered
-- them is applied. person_id '*' = everyone (a full build not yet followed by an applied full plan).
create table if not exists sync.dirty_people (
    person_id     text        primary key,
    reasons       text[]      not null default '{}',
    change_set_id bigint,
    marked_at     timestamptz not null default clock_timestamp()
);

alter table sync.plans
    add column if not exists change_set_id bigint,
    add column if not exists scope_mode    text,             -- full | restricted
    add column if not exists scope_people  int,
    add column if not exists scope_settled boolean not null default false;

-- The people a restricted plan compared (cleared from sync.dirty_people once the plan is applied).
create table if not exists sync.plan_scope (
    plan_id   bigint not null,
    person_id text   not null,
    primary key (plan_id, person_id)
);

create index if not exists ops_unfinished_idx on sync.ops (plan_id)
    where status in ('pending', 'sending', 'escrow', 'dead_letter', 'held');

-- One hash per person over all of their lines, per workers snapshot: the base of the next change set.
-- Only the last two snapshots' are kept; unlogged (rebuilt from raw_hris when missing).
create unlogged table if not exists audit.person_hashes (
    snapshot_id bigint not null,
    person_id   text   not null,
    h           text   not null
);
create index if not exists person_hashes_snapshot_idx on audit.person_hashes (snapshot_id);

-- Compliance counts kept by difference (dbt int_learning_compliance_counts, macros/compliance_counts.sql):
-- what each incremental build of int_learning_status removed (n < 0) and wrote (n > 0), counted per group,
-- until the counts model adds it to its rows — in the transaction that empties this table. A crash in
-- between leaves the rows here for the next build (appended to, never replaced).
create table if not exists audit.learning_status_deltas (
    change_set_id     bigint,
    org_unit_code     text,
    manager_person_id text,
    location_code     text,
    job_code          text,
    requirement_id    text,
    status            text,
    n                 bigint not null
);

-- The org hierarchy (dbt int_org_units_flattened) the counts' org subtrees were last summed over: a unit that
-- moved takes its counts from the subtrees it left to the ones it joined.
create table if not exists audit.learning_counts_bridge (
    ancestor_org_unit_code   text not null,
    descendant_org_unit_code text not null,
    primary key (ancestor_org_unit_code, descendant_org_unit_code)
);

-- Which build of a table a model last read whole (dbt macros/relations_read.sql): the relation's oid and the
-- transaction that created or last altered its catalog row (dbt's table materialization creates a new relation
-- on every build). While both match, the table has not been rebuilt since, and the reader skips the work only a
-- rebuilt table needs: int_learning_compliance_counts comparing the org hierarchy with its copy (four set
-- differences over every pair: ~3 s at 112,000 units), int_org_units_headed judging every unit's head.
create table if not exists audit.relations_read (
    reader        text not null,
    relation      text not null,
    relation_oid  oid  not null,
    relation_xmin text not null,
    primary key (reader, relation)
);

-- The org units the people of a change set were placed in before int_workers_placed rewrote their rows (its
-- pre-hook), until int_org_units_headed judges those units' heads again and empties the table in its own
-- transaction (a crash in between leaves them for the next build: appended to, never replaced).
create table if not exists audit.placed_units_before (
    change_set_id bigint,
    org_unit_code text not null
);

-- The LMS groups whose members a build of marts.lms_desired_group_members deleted (its pre-hook, macro
-- group_members_left: the change set's accounts' memberships it writes again), or one row with a null group_key
-- when it rebuilt every membership; until marts.lms_desired_groups judged those groups again and empties the
-- table in its own transaction (a crash in between leaves them for the next build: appended to, never replaced).
create table if not exists audit.group_members_left (
    change_set_id bigint,
    group_key text
);
