{#- Incremental person-grained models (issue 15: a day's run costs what changed).

    hrlms.warehouse.changes computes a change set per build before dbt runs: the people (HR person ids and
    their LMS account ids) whose rows may differ from the last completed build, and why. The transform stage
    passes its id as the run parameter change_set_id for an incremental build; a full build (the first, a
    changed dbt project, rules or checks, HRLMS_REBUILD=always, the full_refresh DAG param, ...) runs
    `dbt build --full-refresh` with no change set, so these models are created from scratch as tables.

    A model built this way:
      config(materialized='incremental', incremental_strategy='append',
             pre_hook="{{ delete_changed_people('person_id') }}", indexes=[{'columns': ['person_id']}])
      ... where {{ changed_people_filter('workers.person_id') }}
    deletes the rows of the change set's people and inserts them again from the current inputs, in one
    transaction (the pre-hook runs inside the model's transaction): a crash leaves the table as it was,
    and a rerun of the same change set converges. People who are gone are deleted and not inserted again.
    Everything a row holds must then be a function of the person's own inputs: run-date values (the local
    date, tenure, as-of dates) are computed by the readers (macro local_date_in), never stored.

    With no change set (`dbt build` by hand on an existing table) every row is rebuilt: the filter lets
    everyone through and the pre-hook deletes everything. -#}

{% macro change_set_id() -%}
    {{- return(run_param('change_set_id') | int) -}}
{%- endmacro %}

{% macro changed_people() -%}
    (select person_id from {{ source('audit', 'change_set_people') }} where change_set_id = {{ change_set_id() }})
{%- endmacro %}

{% macro changed_people_filter(column, account_column=none) -%}
    {#- Rows of the change set's people (`column` in the change set) and, with `account_column`, rows on an
        LMS account one of them holds now. Everyone on a full build or without a change set. -#}
    {%- if is_incremental() and change_set_id() > 0 -%}
        ({{ column }} in {{ changed_people() }}
        {%- if account_column %} or {{ account_column }} in {{ accounts_of_changed_people() }}{% endif %})
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}

{% macro changed_people_lookup(column, account_column=none) -%}
    {#- changed_people_filter for an INDEXED column of a large table: `column = any(array(<the change set>))`
        is an index scan of the change set's people, where the semi-join of changed_people_filter reads the
        whole table (always so in models that turn nested loops off). Without an index on `column` it would
        test every row against the whole array: use it only on indexed columns. Everyone on a full build. -#}
    {%- if is_incremental() and change_set_id() > 0 -%}
        {%- if account_column -%}
        ({{ column }} = any(array{{ changed_people() }})
            or {{ account_column }} = any(array{{ accounts_of_changed_people() }}))
        {%- else -%}
        {{ column }} = any(array{{ changed_people() }})
        {%- endif -%}
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}

{% macro lookups_without_nested_loops() -%}
    {#- A pre-hook of a model that reads a change set's rows by `= any(array(...))` (changed_people_lookup, the
        `wanted` account holders): nested loops off for its build. With them, PostgreSQL may probe an index once
        per row of the outer side with the whole array as the condition (1M workers, 42,602 people: over six
        minutes for int_workers_identity, under a second without). A full build keeps the planner's choice. -#}
    {{- 'set local enable_nestloop = off' if is_incremental() and change_set_id() > 0 else 'select 1' -}}
{%- endmacro %}

{% macro person_index(column='person_id') -%}
    {#- A post-hook: the index changed_people_lookup needs, also on a table created before it was declared
        (dbt's `indexes` config applies only when it creates the table). -#}
    create index if not exists {{ this.identifier }}__{{ column }} on {{ this }} ({{ column }})
{%- endmacro %}

{% macro delete_changed_people(column='person_id', account_column=none) -%}
    {#- The pre-hook of an incremental person model (give it as a string: "{{ delete_changed_people() }}",
        so that it is rendered when the model runs): the rows the model will insert again. `column` and
        `account_column` must be indexed (every such model declares the index): the rows are looked up by it,
        not found by a scan of the whole table (1M workers: 1.7 s -> 0.6 s for lms_desired_group_members). -#}
    {%- if is_incremental() -%}
        delete from {{ this }}
        {%- if change_set_id() > 0 %} where {{ changed_people_lookup(column) }}
        {%- if account_column %} or {{ account_column }} = any(array{{ accounts_of_changed_people() }}){% endif %}
        {%- endif %}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{% macro accounts_of_changed_people() -%}
    {#- The LMS accounts the change set's people hold now (int_identity_decisions, decided by this build;
        the models using it say `-- depends_on: {{ ref('int_identity_decisions') }}`). -#}
    (select account_person_id from {{ ref('int_identity_decisions') }}
     where person_id in {{ changed_people() }} and account_person_id is not null)
{%- endmacro %}

{% macro changed_account_holders_cte() -%}
    {#- The CTE `wanted` (followed by a comma; nothing on a full build): person_id of the holders of the LMS accounts
        the change set touches (the accounts its people held in the last build, which the change set holds, and the
        ones they hold now). Two semi-joins that PostgreSQL estimates from the change set's statistics: as one OR of
        two subqueries it could not, and hashed every input of the models using it whole (1M workers: 2.9 s for an
        event of 2 people). A model opens its query with `with {{ changed_account_holders_cte() }}`, filters each
        input by changed_account_holders_filter() and says `-- depends_on: {{ ref('int_identity_decisions') }}`. -#}
    {%- if is_incremental() and change_set_id() > 0 %}
wanted as (  -- noqa: ST03
    select person_id from {{ ref('int_workers_identity') }}
    where is_account_holder and account_person_id = any(array{{ changed_people() }})
    union
    select person_id from {{ ref('int_workers_identity') }}
    where is_account_holder and account_person_id = any(array{{ accounts_of_changed_people() }})
),
    {%- endif %}
{%- endmacro %}

{% macro changed_account_holders_filter() -%}
    {#- The condition on person_id that keeps the rows of `wanted` (changed_account_holders_cte); true on a full
        build. Given to the model as a Jinja variable, which sqlfluff does not follow (hence the CTE's noqa). -#}
    {%- set lookup = 'person_id = any(array(select person_id from wanted))' -%}
    {{- lookup if (is_incremental() and change_set_id() > 0) else 'true' -}}
{%- endmacro %}

{% macro local_date_in(time_zone, hours_ahead=0) -%}
    {#- The run's logical moment as a date in `time_zone` (a valid zone name): a worker's local date.
        hours_ahead: the date that many hours after the run's moment (the access lead of starts). -#}
    {%- if hours_ahead | float != 0 %}
    cast(((cast('{{ run_param("logical_ts") }}' as timestamptz) + interval '{{ hours_ahead | float }} hours')
          at time zone {{ time_zone }}) as date)
    {%- else %}
    cast((cast('{{ run_param("logical_ts") }}' as timestamptz) at time zone {{ time_zone }}) as date)
    {%- endif %}
{%- endmacro %}

{% macro get_where_subquery(relation) -%}
    {#- dbt's data tests read their model through this macro (dbt's default plus one rule): on an incremental
        build, the tests of a model named in var incremental_person_models or change_set_tested_models judge
        only the change set's rows (the other rows are the last build's, which passed them), looked up by the
        person_id index for the models of var person_indexed_models. -#}
    {%- set where = config.get('where', '') -%}
    {%- set person_models = var('incremental_person_models', []) + var('change_set_tested_models', []) -%}
    {%- set restrict = change_set_id() > 0 and relation.identifier in person_models -%}
    {%- set lookup = relation.identifier in var('person_indexed_models', []) -%}
    {%- if where or restrict -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {% if where %}({{ where }}){% else %}true{% endif %}
            {%- if restrict and lookup %} and person_id = any(array{{ changed_people() }})
            {%- elif restrict %} and person_id in {{ changed_people() }}{% endif %}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}

{% macro analyze_built() -%}
    {#- A post-hook: fresh statistics for the planner's joins over the table just built. A table (re)created by this
        build is analyzed (it has none); an incremental model on a build with a change set rewrote a few percent
        of its rows, and keeps the statistics it has — autovacuum re-analyzes a table once a tenth of its rows
        changed, as for any table — unless it has none yet (1M workers: 13 analyzes, 0.1-0.5 s each, 5.5 s of a
        day's transform, several on its longest chain). -#}
    {%- if model.config.materialized in ('incremental', 'snapshot') and change_set_id() > 0 -%}
    do $analyze$ begin
        if not exists (select from pg_catalog.pg_stat_user_tables where relid = '{{ this }}'::regclass
                       and coalesce(last_analyze, last_autoanalyze) is not null) then
            analyze {{ this }};
        end if;
    end $analyze$
    {%- else -%}
    analyze {{ this }}
    {%- endif -%}
{%- endmacro %}
