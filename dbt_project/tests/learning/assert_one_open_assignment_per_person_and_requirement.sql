-- A person has at most one open assignment spell per requirement (no duplicate enrolments). On a build with
-- a change set, the spells of its people (the only ones the build wrote).
select person_id, requirement_id, count(*) as open_spells
from {{ ref('learning_assignments') }}
where is_open
{%- if change_set_id() > 0 %}
    and person_id = any(array{{ changed_people() }})
{%- endif %}
group by person_id, requirement_id
having count(*) > 1
