-- Transport safety for sync.ops (hrlms.sync.apply). Idempotent; run by hrlms.warehouse.db.bootstrap
-- after schema.sql.
--   escrow_attempts: set when an op goes to escrow after a transport failure: 1 + the escrow_attempts
--                    of the latest earlier escrow of the same person/group in an earlier plan (reset by
--                    any applied op of that person/group in between).
--   next_attempt_at: on such an escrow: now + min(HRLMS_ESCROW_MAX_SECONDS, HRLMS_ESCROW_BASE_SECONDS
--                    × 2^(escrow_attempts-1)), no earlier than the LMS's Retry-After. On a pending op:
--                    the op is deferred (not claimed) until then, because its person/group is backing off.
--   claimed_by:      the apply shard (mapped task index) that claimed the op last: after a crash, a
--                    shard takes back only its own 'sending' ops while the other shards go on.
alter table sync.ops
    add column if not exists next_attempt_at timestamptz,
    add column if not exists escrow_attempts int,
    add column if not exists claimed_by text;
create index if not exists ops_backoff_idx on sync.ops (next_attempt_at) where escrow_attempts is not null;
