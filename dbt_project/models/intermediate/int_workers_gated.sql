{{ config(
    materialized='table',
    post_hook="analyze {{ this }}"
) }}
-- A table (not a view) with fresh statistics: downstream joins plan badly on view estimates.
-- The workers of this run's snapshot that passed the quality gate: quarantined lines and exact
-- duplicate copies removed.
with workers as (
    -- the run's snapshot, parsed once by the staging stage
    select * from {{ ref('stg_hris__snapshot_workers') }}
    where snapshot_id = {{ run_param('snapshot_id') }}
),

quarantined as (
    select distinct line_no
    from {{ source('dq', 'quarantine') }}
    where snapshot_id = {{ run_param('snapshot_id') }} and entity = 'workers'
),

gated as (
    select workers.*
    from workers
    where
        workers.copy_no = 1
        and not exists (select 1 from quarantined where quarantined.line_no = workers.line_no)
)

select * from gated
