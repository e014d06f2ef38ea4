{#
    Snapshots keep time in the run's logical date, never the wall clock.

    dbt stamps a snapshot row it closes because the key vanished from the source (hard_deletes:
    invalidate) with snapshot_get_time() — now() by default. Overriding it here makes every version
    boundary (changes use the snapshot's updated_at column, which is the logical date too) the logical
    date of the run that saw it, so rerunning or backfilling a day gives the same history.
#}
{% macro snapshot_get_time() -%}
    cast('{{ run_param("logical_date") }}' as timestamp without time zone)
{%- endmacro %}
