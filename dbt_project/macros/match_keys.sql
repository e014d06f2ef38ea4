{% macro match_keys(rules, relations, where=none, keys_not_null=false, key_in=none) -%}
    {#- The identity match keys of `relations` (CTE or relation names with person_id and one column per
        rule), one select per rule and relation, joined by `union`:
            person_id, rule (its name), rule_rank (its position in `rules`, 1 = most trusted), key_value.
        `rules` is var('identity_match_rules') (checked by the caller); each rule names its key column.
        where: a condition the rows must meet; keys_not_null: leave out rows without the key;
        key_in: a relation (rule, key_value): only keys it holds for the same rule.
        No rules: an empty select with the same columns. Used by int_identity_decisions. -#}
{%- for rule in rules %}
    {%- set rule_rank = loop.index %}
    {%- set last_rule = loop.last %}
    {%- set conditions = ([where] if where else []) + ([rule ~ ' is not null'] if keys_not_null else [])
        + ([rule ~ " in (select key_value from " ~ key_in ~ " where rule = '" ~ rule ~ "')"] if key_in else []) %}
    {%- for relation in relations %}
    select person_id, '{{ rule }}' as rule, {{ rule_rank }} as rule_rank, {{ rule }} as key_value
    from {{ relation }}
        {%- if conditions %}
    where {{ conditions | join(' and ') }}
        {%- endif %}
        {%- if not (last_rule and loop.last) %}
    union
        {%- endif %}
    {%- endfor %}
{%- else %}
    select cast(null as text) as person_id, cast(null as text) as rule, 0 as rule_rank,
        cast(null as text) as key_value
    where false
{%- endfor %}
{%- endmacro %}
