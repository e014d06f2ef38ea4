{#
    A snapshot compares the current versions of the keys in its source only, when that is all it needs.

    dbt's staging query reads every current version of the snapshot (CTE snapshotted_data) to join it with the
    source by unique key. With hard_deletes: ignore nothing else reads those rows: a key missing from the
    source is left as it is. snap_workers' source on an incremental build is the change set's people, so this
    hands dbt's own macro the current versions of the source's keys, looked up by the snapshot's unique-key
    index (snap_workers' post-hook creates it), instead of every version of 1M workers. Snapshots that close
    vanished keys (hard_deletes invalidate or new_record) or have a composite key get dbt's query unchanged.
#}
{% macro postgres__snapshot_staging_table(strategy, source_sql, target_relation) -%}
    {%- if strategy.hard_deletes == 'ignore' and strategy.unique_key is string -%}
        {%- set versions_of_source_keys -%}
            (select * from {{ target_relation }}
             where {{ strategy.unique_key }} in (
                 select {{ strategy.unique_key }} from ({{ source_sql }}) as source_keys)) as current_versions
        {%- endset -%}
        {{ return(dbt.default__snapshot_staging_table(strategy, source_sql, versions_of_source_keys)) }}
    {%- else -%}
        {{ return(dbt.default__snapshot_staging_table(strategy, source_sql, target_relation)) }}
    {%- endif -%}
{%- endmacro %}
