{% macro status_counts() -%}
    {#- One count per compliance status (learning_compliance_status.status), named after the status:
        the columns every compliance count (rollup, trend analysis) reports. -#}
    {%- for status in ['completed', 'in_progress', 'not_started', 'overdue', 'expired', 'exempt'] %}
        count(*) filter (where status = '{{ status }}') as {{ status }}{{ ',' if not loop.last }}
    {%- endfor %}
{%- endmacro %}
