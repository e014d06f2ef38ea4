-- Everything an assignment rule can test, per gated worker of the run, on the worker's own local date
-- (the run's logical moment in the worker's time zone, never now()): the stored facts
-- (int_learning_worker_facts) and what moves with the calendar, computed here:
--   local_date  = the run's logical moment in the worker's time zone;
--   tenure_days = local date - (start date, else hire date).
-- A table: the learning models join it several times and need its statistics (and it is cheap to write).
-- Indexed on person_id: an incremental build looks the change set's people up in it (changed_people_lookup).
{{ config(
    materialized='table',
    indexes=[{'columns': ['person_id']}],
    post_hook="analyze {{ this }}"
) }}

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
