-- Clean workers of the HR snapshots, as of the run's logical date: the stored rows of int_workers (kept by
-- difference: an incremental build recomputes the change set's people) with the run's date added here, so
-- that no stored row carries it.
{{ config(materialized='view') }}

with workers as (
    select * from {{ ref('int_workers') }}
),

final as (
    select
        workers.*,
        cast('{{ run_param("logical_date") }}' as date) as as_of_date
    from workers
)

select * from final
