-- What the warehouse was last built from, per stage (staging, gate, transform): a stage whose inputs equal
-- those of its last *completed* build skips its work (a rerun with no change). 'building' is written
-- before the work starts, so a crash mid-stage never counts as built (hrlms.warehouse.builds).
create table if not exists audit.builds (
    stage        text        primary key,
    inputs       jsonb       not null,
    state        text        not null check (state in ('building', 'built')),
    run_key      text        not null,
    detail       jsonb       not null default '{}',
    started_at   timestamptz not null default clock_timestamp(),
    finished_at  timestamptz
);
