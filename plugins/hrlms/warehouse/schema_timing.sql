-- Access latency (marts.access_events): which run made a plan, at which logical moment, and when that run
-- started, so that the moment an LMS write took effect can be stated for live runs (the write's own time)
-- and for runs of past logical moments (backfills, tests: the logical moment + the time the run took).
alter table sync.plans
    add column if not exists run_key        text,
    add column if not exists logical_ts     timestamptz,
    add column if not exists run_started_at timestamptz;
