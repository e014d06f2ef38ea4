{#- Whether a table was rebuilt since a model last read it whole (audit.relations_read).

    dbt's table materialization creates a new relation on every build, so a table's oid together with the
    transaction that created or last altered its catalog row (pg_class.xmin) names one build of it. A model
    that keeps something derived from a table (a copy of the org hierarchy, every unit's head) records the build
    it read (relation_read, in a post-hook: the model's transaction) and, on its next incremental build, skips
    the work that only a rebuilt table would need while relation_unchanged holds. Anything else that touches the
    catalog row (a grant, an index) only makes it do that work again: never the other way round. -#}

{% macro relation_regclass(relation) -%}
    {#- by schema and name: `dbt build --empty` renders a ref as a subquery -#}
    '{{ relation.schema }}.{{ relation.identifier }}'::regclass
{%- endmacro %}

{% macro relation_unchanged(reader, relation) -%}
    {#- SQL: true while `relation` is the build of it `reader` recorded last (asked by relation_unchanged_now).
        False in a unit test (the relation is the test's rows, with no schema). -#}
    {%- if relation.schema is none %}false{% else %}
    exists (select 1 from {{ audit_table('relations_read') }} as r
            inner join pg_catalog.pg_class as c on r.relation_oid = c.oid and r.relation_xmin = c.xmin::text
            where r.reader = '{{ reader }}' and r.relation = '{{ relation.identifier }}'
                and c.oid = {{ relation_regclass(relation) }})
    {%- endif %}
{%- endmacro %}

{% macro relation_unchanged_now(reader, relation) -%}
    {#- relation_unchanged, asked once when the model or hook is rendered to run (false while dbt parses the
        project): the model chooses its statements by it. -#}
    {%- if not execute -%}
        {{- return(false) -}}
    {%- endif -%}
    {%- set res = run_query('select ' ~ relation_unchanged(reader, relation)) -%}
    {{- return(res.columns[0].values()[0]) -}}
{%- endmacro %}

{% macro relation_read(reader, relation) -%}
    {#- A post-hook: `reader` has now read this build of `relation`. -#}
    insert into {{ audit_table('relations_read') }} (reader, relation, relation_oid, relation_xmin)
    select '{{ reader }}', '{{ relation.identifier }}', c.oid, c.xmin::text from pg_catalog.pg_class as c
    where c.oid = {{ relation_regclass(relation) }}
    on conflict (reader, relation) do update
    set relation_oid = excluded.relation_oid, relation_xmin = excluded.relation_xmin
{%- endmacro %}
