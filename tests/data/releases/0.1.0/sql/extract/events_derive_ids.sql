-- Give valid staged events without an event id one derived from their content and their
-- occurrence number among identical rows of this file: reloading the file adds nothing, and two
-- identical rows stay two events. Runs only when some row lacks an id.
-- The content is a row value's text: it keeps every field in its place, nulls as nulls and quotes
-- text that holds a comma, so rows that differ only in which column is empty stay apart (with
-- concat_ws, discount_used = true and free_shipping_used = true read the same when the other is null).

with derived as (
    select
        row_number,
        'd:' || md5(
            row(
                user_id_v, session_id, to_char(event_at_v, 'YYYY-MM-DD"T"HH24:MI:SS.US'), action,
                product_category, channel, round(amount_v, 2), discount_used_v, free_shipping_used_v
            )::text
        ) as content_key
    from pg_temp.events_checked
    where event_id is null and not is_rejected
),

numbered as (
    select
        row_number,
        content_key || ':' || row_number() over (partition by content_key order by row_number) as derived_id
    from derived
)

update pg_temp.events_checked as c
set event_id_v = n.derived_id
from numbered as n
where c.row_number = n.row_number
