{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    indexes=[{'columns': ['person_id']}],
    pre_hook="{{ delete_changed_people('person_id') }}",
    post_hook="{{ analyze_built() }}"
) }}
-- A table (not a view) with fresh statistics: downstream joins plan badly on view estimates.
-- The workers of this run's snapshot that passed the quality gate: quarantined lines and exact
-- duplicate copies removed.
-- Incremental (macros/changed_people.sql): an incremental build deletes and inserts again the rows of the
-- change set's people only (a new, gone or edited HR record, or a changed verdict on their line, puts a
-- person in it). snapshot_id and line_no are the lineage of a row: the snapshot and line it was last taken
-- from (a full build takes everyone from the run's snapshot).
with workers as (
    -- the run's snapshot, parsed once by the staging stage
    select * from {{ ref('stg_hris__snapshot_workers') }}
    where snapshot_id = {{ run_param('snapshot_id') }} and {{ changed_people_filter('person_id') }}
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
