-- Breaker, plan review and approval (hrlms.sync.breaker).
-- sync.plans.status: planned | held | approved | applied | partial | superseded | rejected
-- sync.ops.status adds: held (its plan is held) | rejected (its plan was rejected)
alter table sync.plans
    add column if not exists held_reason text,
    add column if not exists review jsonb not null default '{}';

create table if not exists sync.plan_decisions (
    plan_id     bigint not null references sync.plans,
    decision    text   not null check (decision in ('approved', 'rejected')),
    decided_by  text   not null,          -- who triggered it (Airflow run id / user), never a secret
    decided_at  timestamptz not null default clock_timestamp(),
    note        text
);

-- The match keys (employee number, work e-mail) on the quarantined worker lines of a snapshot. The plan
-- protects the accounts they point at too: a line that lost or garbled its person_id is still that
-- person, who must not be deactivated as a "leaver" because of it. The keys are read from the raw lines,
-- trimmed and lower-cased as staging does (reading them through the staging view parsed the whole
-- snapshot again: seconds at 1M workers, for each plan).
-- A line quarantined only for carrying another person's value (duplicate_email, duplicate_username,
-- duplicate_employee_number) has a person_id of its own and protects no one else: the value's keeper
-- (who may have left) is a different person.
create or replace function hrlms_util.quarantined_worker_keys(p_snapshot_id bigint)
returns table (employee_number text, work_email text)
language sql stable as $$
    select nullif(btrim(w.employee_number), ''), nullif(lower(btrim(w.work_email)), '')
    from dq.quarantine q
    join raw_hris.worker_lines w on w._snapshot_id = q.snapshot_id and w._line_no = q.line_no
    where q.snapshot_id = p_snapshot_id and q.entity = 'workers' and w._snapshot_id = p_snapshot_id
      and (nullif(btrim(w.employee_number), '') is not null or nullif(btrim(w.work_email), '') is not null)
    group by q.line_no, 1, 2
    having bool_or(q.rule not in ('duplicate_email', 'duplicate_username', 'duplicate_employee_number'))
$$;
