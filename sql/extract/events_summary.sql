-- What the loader needs to know of the checked events of one file, in one pass over them: how
-- many rows were read and rejected, whether some valid row has no event id (events_derive_ids
-- then gives it one), and the time range of the valid rows (their partitions, and the range
-- events_insert compares with the events already loaded). Reads pg_temp.events_checked
-- (events_check.sql), writes its one row to pg_temp.events_summary.

create temp table events_summary on commit drop as
select
    count(*) as rows_read,
    count(*) filter (where is_rejected) as rows_rejected,
    coalesce(bool_or(event_id is null and not is_rejected), false) as is_id_missing,
    min(event_at_v) filter (where not is_rejected) as min_at,
    max(event_at_v) filter (where not is_rejected) as max_at
from pg_temp.events_checked
