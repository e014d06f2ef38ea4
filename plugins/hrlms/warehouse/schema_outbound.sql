-- What the LMS receives is the outbound mapping's (hrlms.sync.outbound, docs/lms-mapping.md).

-- The values we sent, per mapped attribute name (empty ones left out): what the next plan compares with.
alter table sync.applied_users add column if not exists attrs jsonb;
-- Accounts applied before the mapping existed: their values under the default mapping's names (the
-- desired row's columns they came from), so that upgrading sends only what is new.
update sync.applied_users set attrs = jsonb_strip_nulls(jsonb_build_object(
    'user_name', user_name, 'given_name', given_name, 'family_name', family_name,
    'formatted_name', display_name, 'display_name', display_name, 'email', email, 'title', title,
    'employee_number', employee_number, 'department', department))
where attrs is null;

-- The mapping a plan was made with (names, paths, LMS types, checksum): apply builds the requests from it,
-- and a plan with another mapping than the last applied one compares every account.
alter table sync.plans add column if not exists outbound jsonb;

-- The LMS's /Schemas and /ResourceTypes as the plan stage last read them (the mapping's check).
create table if not exists sync.lms_schemas (
    base_url        text primary key,
    schemas         jsonb not null,
    resource_types  jsonb not null,
    read_at         timestamptz not null default clock_timestamp()
);
