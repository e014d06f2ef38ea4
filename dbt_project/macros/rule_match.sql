{#
  The rule language's criteria as staging reads them from learning.rules / learning.role_rules: arrays
  (null = any value), org units and countries upper-cased the way staging normalises worker fields.
#}
{% macro rule_criteria() -%}
    match_all,
    job_codes,
    job_families,
    (select array_agg(upper(c)) from unnest(org_subtrees) as c) as org_subtrees,
    locations,
    (select array_agg(upper(c)) from unnest(countries) as c) as countries,
    employment_types,
    people_manager,
    min_tenure_days,
    max_tenure_days,
    hired_on_or_after,
    hired_before
{%- endmacro %}

{#
  The rule language's criteria (hrlms.learning.rules.Match), one place for every kind of rule: true when
  the worker `w` meets every criterion the rule `r` gives (a list = any of its values; org_subtrees = the
  unit or anything below it, through the hierarchy bridge `bridge`) on the worker's local date, inside the
  rule's active_from/active_until. Used by the learning assignments (int_learning_rule_matches) and the
  LMS roles (int_lms_role_matches).
#}
{% macro rule_matches(r, w, bridge) -%}
    ({{ r }}.job_codes is null or {{ w }}.job_code = any({{ r }}.job_codes))
    and ({{ r }}.job_families is null or {{ w }}.job_family = any({{ r }}.job_families))
    and ({{ r }}.locations is null or {{ w }}.location_code = any({{ r }}.locations))
    and ({{ r }}.countries is null or {{ w }}.country = any({{ r }}.countries))
    and ({{ r }}.employment_types is null or {{ w }}.employment_type = any({{ r }}.employment_types))
    and ({{ r }}.people_manager is null or {{ w }}.is_people_manager = {{ r }}.people_manager)
    and ({{ r }}.min_tenure_days is null or {{ w }}.tenure_days >= {{ r }}.min_tenure_days)
    and ({{ r }}.max_tenure_days is null or {{ w }}.tenure_days <= {{ r }}.max_tenure_days)
    and ({{ r }}.hired_on_or_after is null or {{ w }}.hire_date >= {{ r }}.hired_on_or_after)
    and ({{ r }}.hired_before is null or {{ w }}.hire_date < {{ r }}.hired_before)
    and ({{ r }}.active_from is null or {{ w }}.local_date >= {{ r }}.active_from)
    and ({{ r }}.active_until is null or {{ w }}.local_date <= {{ r }}.active_until)
    and ({{ r }}.org_subtrees is null or exists (
        select 1 from {{ bridge }}
        where {{ bridge }}.descendant_org_unit_code = {{ w }}.org_unit_code
            and {{ bridge }}.ancestor_org_unit_code = any({{ r }}.org_subtrees)))
{%- endmacro %}
