-- A person has at most one open assignment spell per requirement (no duplicate enrolments).
select person_id, requirement_id, count(*) as open_spells
from {{ ref('learning_assignments') }}
where is_open
group by person_id, requirement_id
having count(*) > 1
