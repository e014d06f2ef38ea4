-- HR change events (the near-real-time path, hrlms.sources.events; docs/events.md). An HR system or a relay
-- posts asset events on hrlms://hr/worker-changes to Airflow's REST API; the hrlms_hr_events DAG lands them
-- here (kept for audit) and builds a workers snapshot = the last good HR file + the events newer than it.

-- One row per event id: the same id twice is landed once (the first payload is kept; a different payload
-- under a known id is counted as a conflict and ignored).
create table if not exists raw_hris.hr_events (
    event_id          text        primary key,      -- the HR system's id of the change
    hr_ts             timestamptz,                  -- when HR made the change (null: the event was rejected)
    source            text,                         -- e.g. workday, bamboohr (free text from the event)
    airflow_event_id  bigint,                       -- Airflow's AssetEvent id
    airflow_ts        timestamptz,                  -- when Airflow received it
    payload_sha       text        not null,         -- sha256 of the extra as received
    record_count      integer     not null,
    problem           text,                         -- why the whole event cannot be used (null: usable)
    received_at       timestamptz not null default clock_timestamp()
);

-- The worker records of an event, in canonical fields (only the columns the event carried: an event may
-- change a few fields of a person; the others keep their value from the HR file).
create table if not exists raw_hris.hr_event_records (
    event_id   text        not null references raw_hris.hr_events (event_id),
    record_no  integer     not null,                -- 1-based position in the event's records
    person_id  text,
    hr_ts      timestamptz,
    fields     jsonb       not null default '{}',   -- {canonical field: text or null}
    problem    text,                                -- why the record cannot be used (unknown column, ...)
    primary key (event_id, record_no)
);
-- the run that landed the event
alter table raw_hris.hr_events add column if not exists landed_by text;
create index if not exists hr_event_records_person_idx on raw_hris.hr_event_records (person_id, hr_ts);
create index if not exists hr_event_records_ts_idx on raw_hris.hr_event_records (hr_ts);

-- Snapshots built from events: the HR file (or API extract) they start from; null for a landed file.
alter table raw_hris.snapshots add column if not exists base_snapshot_id bigint;
-- An event-built snapshot's lines are deleted once no build refers to it (the events stay; hrlms.sources.events.prune).
alter table raw_hris.snapshots add column if not exists pruned_at timestamptz;

-- Which events made each line of an event-built snapshot that is not a copy of the file's line (the
-- quarantine and the run report name the event and record instead of a file line).
create table if not exists raw_hris.hr_event_lines (
    snapshot_id  bigint  not null,
    line_no      bigint  not null,
    person_id    text    not null,
    event_ids    text[]  not null,
    primary key (snapshot_id, line_no)
);
-- The file line an event line replaces (the person's line of that number in the HR file the snapshot is built
-- from), 0 when the person has no line in the file: the change set finds the lines an event run changed by it
-- (hrlms.warehouse.changes). Null on lines written before it was kept.
alter table raw_hris.hr_event_lines add column if not exists file_line_no bigint;

-- One pipeline at a time on the warehouse: the daily/hourly run (hrlms_provision) and the event runs
-- (hrlms_hr_events) both rebuild the staging table, the models and the plan. The run holding the lease
-- builds; another waits (hrlms.warehouse.lease).
create table if not exists audit.pipeline_lease (
    id            integer     primary key default 1 check (id = 1),
    run_key       text,
    taken_at      timestamptz,
    heartbeat_at  timestamptz
);
insert into audit.pipeline_lease (id) values (1) on conflict do nothing;
