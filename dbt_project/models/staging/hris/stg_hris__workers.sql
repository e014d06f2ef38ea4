-- Typed, cleaned worker rows of every snapshot (the parse: macros/hris_workers.sql).
with source as (
    select * from {{ source('hris', 'workers') }}
),

{{ hris_worker_parse_ctes() }}

select
{%- for c in hris_worker_columns() %}
    {% if c == 'copy_no' -%}
    row_number() over (partition by snapshot_id, person_id, row_hash order by line_no) as copy_no
    {%- else %}{{ c }}{% endif %}{{ ',' if not loop.last }}
{%- endfor %}
from flagged
