{% macro run_param(name) -%}
    {#- The run's parameters: snapshot_id, org_snapshot_id (raw_hris snapshot ids), logical_date (UTC date)
        and logical_ts (the run's logical moment); change_set_id: the change set of an incremental build
        (macros/changed_people.sql), -1 for a full one; staging_carry: 1 when the staging stage lets
        stg_hris__snapshot_workers copy the lines it already parsed (macros/hris_workers.sql); staging_delta:
        the snapshot the table holds when the run's snapshot is built from the same file by events
        (macros/hris_workers.sql#hris_line_carry_delta), -1 otherwise. hrlms.transform.dbt sets them as HRLMS_RUN_<NAME>
        environment variables rather than --vars: any change of --vars makes dbt re-parse the whole
        project (~5 s per invocation, twice per run). A --vars value or a unit test's `overrides: vars:`
        still wins; the defaults make `dbt parse` / `dbt ls` work. -#}
    {%- set defaults = {
        'snapshot_id': '-1',
        'org_snapshot_id': '-1',
        'logical_date': '1970-01-01',
        'logical_ts': '1970-01-01T00:00:00+00:00',
        'change_set_id': '-1',
        'staging_carry': '0',
        'staging_delta': '-1',
    } -%}
    {%- if name not in defaults -%}
        {{ exceptions.raise_compiler_error("run_param: unknown run parameter '" ~ name ~ "'") }}
    {%- endif -%}
    {#- Parsing (execute is false) gets the defaults without reading the environment: an env_var() read while
        parsing makes dbt re-parse every file that read it whenever its value changes, i.e. on every run
        (1M workers: ~1.7 s of each staging and ~0.8 s of each transform invocation). What a model refers to
        must not depend on these parameters anyway (is_incremental() is false while parsing too). -#}
    {%- if not execute -%}
        {{- return(var(name, defaults[name])) -}}
    {%- endif -%}
    {{- return(var(name, env_var('HRLMS_RUN_' ~ (name | upper), defaults[name]))) -}}
{%- endmacro %}
