-- What the loader needs to know of the checked events of one file, in one pass over them: how
-- many rows were rejected, and whether some valid row has no event id (events_derive_ids then
-- gives it one). Reads pg_temp.events_checked (events_check.sql).

select
    count(*) filter (where is_rejected) as rejected,
    coalesce(bool_or(event_id is null and not is_rejected), false) as without_id
from pg_temp.events_checked
