{#- Compliance counts kept by difference (int_learning_compliance_counts; issue 15: grouped marts are updated
    from the changed groups only).

    An incremental build of int_learning_status deletes and rewrites the rows of the change set's people. Its
    pre-hook counts the rows it is about to delete, per group, as negative numbers; its post-hook counts the
    rows it wrote as positive ones (audit.learning_status_deltas; both inside the model's transaction). The
    counts model adds those numbers to the groups they touch and empties the table in its own transaction, so
    a crash between the two leaves the numbers for the next build; a rerun of the same change set adds a
    removal and a rewrite of the same rows (zero). A full build counts everything and empties the table.

    The hooks name the two audit tables (sources of _changes__sources.yml) through audit_table(), not
    source(): `dbt build --empty` turns a source into a subquery, which a delete or an insert cannot write to. -#}

{% macro audit_table(name) -%}
    {{- 'audit.' ~ name -}}
{%- endmacro %}

{% macro learning_status_deltas(sign) -%}
    {%- if is_incremental() -%}
        insert into {{ audit_table('learning_status_deltas') }}
            (change_set_id, org_unit_code, manager_person_id, location_code, job_code, requirement_id, status, n)
        select {{ change_set_id() }}, org_unit_code, manager_person_id, location_code, job_code, requirement_id,
            status, {{ sign }} * count(*)
        from {{ this }}
        where {{ changed_people_lookup('person_id') }}
        group by org_unit_code, manager_person_id, location_code, job_code, requirement_id, status
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{% macro learning_counts_bridge_current() -%}
    {#- `true` while audit.learning_counts_bridge holds the hierarchy of the int_org_units_flattened table as it
        stands (macros/relations_read.sql), asked once where it is called: the set differences between the two are
        then empty, and the statements gated by `not` it are skipped by PostgreSQL (a constant false filter). -#}
    {%- set unchanged = relation_unchanged_now('int_learning_compliance_counts', ref('int_org_units_flattened')) -%}
    {{- 'true' if unchanged else 'false' -}}
{%- endmacro %}

{% macro learning_counts_bridge_keep() -%}
    {#- Post-hook of int_learning_compliance_counts: the hierarchy its org subtrees are now summed over, and which
        build of int_org_units_flattened that is (nothing to compare while it has not been rebuilt). -#}
    {%- set current = learning_counts_bridge_current() %}
    delete from {{ audit_table('learning_counts_bridge') }} as kept
    using (
        select ancestor_org_unit_code, descendant_org_unit_code from {{ audit_table('learning_counts_bridge') }}
        where not {{ current }}
        except
        select ancestor_org_unit_code, descendant_org_unit_code from {{ ref('int_org_units_flattened') }}
        where not {{ current }}
    ) as lost
    where kept.ancestor_org_unit_code = lost.ancestor_org_unit_code
        and kept.descendant_org_unit_code = lost.descendant_org_unit_code;
    insert into {{ audit_table('learning_counts_bridge') }} (ancestor_org_unit_code, descendant_org_unit_code)
    select ancestor_org_unit_code, descendant_org_unit_code from {{ ref('int_org_units_flattened') }}
    where not {{ current }}
    except
    select ancestor_org_unit_code, descendant_org_unit_code from {{ audit_table('learning_counts_bridge') }}
    where not {{ current }};
    {{ relation_read('int_learning_compliance_counts', ref('int_org_units_flattened')) }}
{%- endmacro %}
