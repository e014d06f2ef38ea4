{#- A date from HR text in the snapshot's date format, or null when it does not parse: the same result as
    hrlms_util.try_date(value, format), faster. try_date's EXCEPTION block opens a subtransaction on every
    call (~4 µs; two dates per worker made ~5 s of CPU in the staging parse at 1M workers). An ISO date
    whose day is 01-28 is always valid, so it is built without the function; every other value (days
    29-31, other formats, anything odd) still goes through try_date. `value` must be a column or another
    cheap expression: it is repeated. -#}
{% macro parse_date(value, format) -%}
(case
    when {{ value }} is null then null
    when coalesce({{ format }}, 'YYYY-MM-DD') = 'YYYY-MM-DD'
         and {{ value }} ~ '^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$'
        then make_date(substr({{ value }}, 1, 4)::int, substr({{ value }}, 6, 2)::int, substr({{ value }}, 9, 2)::int)
    else hrlms_util.try_date({{ value }}, {{ format }})
end)
{%- endmacro %}
