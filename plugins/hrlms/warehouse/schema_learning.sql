-- Learning: assignment rules as loaded from the rules file (hrlms.learning.rules), LMS transcript
-- exports as they arrived. dbt reads both as sources; the Python tasks own them.
create schema if not exists learning;
create schema if not exists raw_lms;

-- One row per rule set: 'live' drives assignments; 'preview' is a candidate file under review.
create table if not exists learning.rule_sets (
    ruleset      text primary key check (ruleset in ('live', 'preview')),
    source_path  text not null,          -- file name only (no machine paths)
    checksum     text not null,          -- sha256 of the file: the same file twice is a no-op
    on_unmatch   text not null,          -- stop_assigning | keep_assigned
    loaded_at    timestamptz not null default clock_timestamp()
);

create table if not exists learning.requirements (
    ruleset        text not null,
    requirement_id text not null,
    kind           text not null,        -- course | learning_path | certification
    title          text not null,
    valid_months   int,                  -- recurrence: a completion is valid this long (null = forever)
    window_days    int,                  -- renewal window before expiry
    primary key (ruleset, requirement_id)
);

create table if not exists learning.rules (
    ruleset           text not null,
    rule_id           text not null,
    requirement_id    text not null,
    description       text,
    match_all         boolean not null default false,
    job_codes         text[],
    job_families      text[],
    org_subtrees      text[],
    locations         text[],
    countries         text[],
    employment_types  text[],
    people_manager    boolean,
    min_tenure_days   int,
    max_tenure_days   int,
    hired_on_or_after date,
    hired_before      date,
    due_days          int  not null,
    due_after         text not null,     -- start | transfer | assignment
    active_from       date,
    active_until      date,
    primary key (ruleset, rule_id)
);

-- LMS roles / entitlements by rule (the same criteria as learning.rules): marts.lms_desired_users.roles
create table if not exists learning.role_rules (
    ruleset           text not null,
    rule_id           text not null,
    role              text not null,
    attribute         text not null default 'roles' check (attribute in ('roles', 'entitlements')),
    description       text,
    match_all         boolean not null default false,
    job_codes         text[],
    job_families      text[],
    org_subtrees      text[],
    locations         text[],
    countries         text[],
    employment_types  text[],
    people_manager    boolean,
    min_tenure_days   int,
    max_tenure_days   int,
    hired_on_or_after date,
    hired_before      date,
    active_from       date,
    active_until      date,
    primary key (ruleset, rule_id)
);

create table if not exists learning.exemptions (
    ruleset        text not null,
    exemption_no   int  not null,        -- position in the file (1-based)
    person_id      text,
    requirement_id text,
    rule_id        text,
    reason         text not null,
    since          date,
    until          date,
    primary key (ruleset, exemption_no)
);

-- LMS transcript exports through the same landing folder + YAML mapping as HR files (all text, as
-- arrived; snapshot metadata in raw_hris.snapshots with entity 'transcripts').
create table if not exists raw_lms.transcripts (
    _snapshot_id   bigint not null,
    _line_no       bigint not null,
    record_id      text,
    person_id      text,
    work_email     text,
    requirement_id text,
    status         text,
    completed_at   text,
    score          text
);
create index if not exists transcripts_snapshot_idx on raw_lms.transcripts (_snapshot_id);

-- Tolerant timestamp parsing for transcripts (NULL instead of an error; years outside 1000-9999 too).
create or replace function hrlms_util.try_timestamptz(v text) returns timestamptz
-- parallel unsafe: its EXCEPTION block starts a subtransaction, which a parallel plan cannot (dbt
-- failed with "cannot start subtransactions during a parallel operation" from ~100k workers on)
language plpgsql stable parallel unsafe as $$
declare t timestamptz;
begin
    if v is null or btrim(v) = '' then return null; end if;
    t := btrim(v)::timestamptz;
    if extract(year from t) < 1000 or extract(year from t) > 9999 then return null; end if;
    return t;
exception when others then
    return null;
end $$;
