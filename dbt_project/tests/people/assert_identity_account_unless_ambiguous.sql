-- Every unambiguous identity decision names an account; ambiguous ones name none.
select person_id, account_person_id, is_ambiguous
from {{ ref('int_identity_decisions') }}
where is_ambiguous = (account_person_id is not null)
