-- The status rows int_learning_status replaced and wrote, as signed group counts to apply: on an
-- incremental build its pre-hook adds the change set's old rows (sign -1) and its post-hook their new rows
-- (+1), in the transaction that rewrites them (macro learning_status_delta), and
-- int_learning_status_counts adds them to its counts and empties this table in its own transaction. Rows
-- of a build whose counts did not finish stay here and are applied with the next build's: the sums
-- telescope (-old, +new, -new, +newer = newer - old), so a crash between the two models loses nothing.
-- Never full-refreshed (a full refresh of it alone would lose deltas): a full build recounts every status
-- row in int_learning_status_counts, which empties it.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    full_refresh=false
) }}

select
    cast(null as integer) as change_set_id,
    cast(null as integer) as sign,
    cast(null as text) as org_unit_code,
    cast(null as text) as manager_person_id,
    cast(null as text) as location_code,
    cast(null as text) as job_code,
    cast(null as text) as requirement_id,
    cast(null as text) as status
where false
