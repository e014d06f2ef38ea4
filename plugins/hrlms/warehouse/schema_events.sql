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

-- An event-built snapshot written since lines_over_base was kept holds only its event lines in raw_hris.workers;
-- its other lines are its file's, at the same numbers, except those its event lines replace (file_line_no). Its
-- lines were a copy of the file's before (1M workers: 2.6 s to write and 0.6 s to analyze per event run, and as
-- long again for the delete that pruned them).
alter table raw_hris.snapshots add column if not exists lines_over_base boolean not null default false;
-- Every snapshot's lines as the snapshot has them: what reads a snapshot's raw lines reads this view (dbt's
-- source hris.workers, hrlms.warehouse.changes, the quarantined keys). A filter on _snapshot_id reaches both
-- branches: a landed file or an older event snapshot is read by the lines index; an event snapshot over its
-- file is its event lines plus the file's lines by the same index, less the lines its event lines replace.
create or replace view raw_hris.worker_lines as
select w.* from raw_hris.workers w
union all
select s.snapshot_id, f._line_no, f.person_id, f.employee_number, f.first_name, f.last_name, f.preferred_name,
       f.work_email, f.username, f.employment_status, f.employment_type, f.hire_date, f.start_date,
       f.termination_date, f.last_day_of_work, f.job_code, f.job_title, f.job_family, f.org_unit_code,
       f.manager_person_id, f.location_code, f.country, f.time_zone, f.secondary_manager_person_ids,
       f.temporary_manager_person_id, f.temporary_manager_from, f.temporary_manager_until
from raw_hris.snapshots s
join raw_hris.workers f on f._snapshot_id = s.base_snapshot_id
where s.lines_over_base and s.pruned_at is null
  and not exists (select 1 from raw_hris.hr_event_lines l where l.snapshot_id = s.snapshot_id and l.file_line_no = f._line_no);

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
