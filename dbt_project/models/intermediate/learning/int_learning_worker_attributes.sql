-- Everything an assignment rule can test, per gated worker of the run, on the worker's own local date
-- (the run's logical moment in the worker's time zone, never now()): the stored facts
-- (int_learning_worker_facts) and what moves with the calendar, computed here:
--   local_date  = the run's logical moment in the worker's time zone;
--   tenure_days = local date - (start date, else hire date).
-- A view: the local date and the tenure move with the run's moment, so they are computed on read (macros/
-- changed_people.sql: run-date values are never stored). An incremental build reads the change set's people
-- through int_learning_worker_facts' person_id index; a table rebuilt for every worker took ~2.4 s of each
-- incremental build at 1M workers for the few rows it reads. The readers' rule predicates compare these columns
-- with the rules' (join predicates, estimated without their statistics either way).
{{ config(materialized='view') }}

with facts as (
    select * from {{ ref('int_learning_worker_facts') }}
),

final as (
    select
        *,
        {{ local_date_in('effective_time_zone') }} as local_date,
        {{ local_date_in('effective_time_zone') }} - start_date as tenure_days
    from facts
)

select * from final
