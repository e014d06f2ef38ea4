{% macro learning_status_delta(sign) -%}
    {#- A hook of int_learning_status (give it as a string: "{{ learning_status_delta(-1) }}"): the rows of the
        people it recomputes, as they are when the hook runs — before the pre-hook's delete (sign -1) or
        after the insert (sign +1) — added to int_learning_status_deltas for int_learning_status_counts.
        Nothing on a build that creates the table (a full build: the counts are recounted). -#}
    {%- if is_incremental() -%}
        insert into {{ writable(ref('int_learning_status_deltas')) }}
            (change_set_id, sign, org_unit_code, manager_person_id, location_code, job_code, requirement_id, status)
        select {{ change_set_id() }}, {{ sign }}, org_unit_code, manager_person_id, location_code, job_code,
            requirement_id, status
        from {{ this }}
        where {{ changed_people_lookup('person_id') }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{% macro writable(relation) -%}
    {#- `relation` (a ref) as a plain table name: under `dbt build --empty` a ref renders as an empty
        subquery, which a hook cannot insert into or delete from. -#}
    {{- return(api.Relation.create(database=relation.database, schema=relation.schema,
                                   identifier=relation.identifier)) -}}
{%- endmacro %}
