{{ config(
    materialized='table',
    unlogged=true,
    post_hook="analyze {{ this }}"
) }}
-- The typed rows of this run's workers snapshot, parsed once per run by the staging stage. The quality
-- gate and the intermediate models read this table: at 1M workers each query over the staging view
-- re-parses the snapshot (~40 s), and the gate alone sends about ten. Unlogged: it is rebuilt from
-- raw_hris on every run, so nothing is lost if a crash empties it (the next staging stage refills it).
-- hrlms.transform.dbt.check_staged refuses a gate or transform whose snapshot is not the one in here.
select * from {{ ref('stg_hris__workers') }}
where snapshot_id = {{ run_param('snapshot_id') }}
