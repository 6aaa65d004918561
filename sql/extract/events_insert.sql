-- Add the valid staged events. An event is identified by (event_at, event_id): the first row of
-- each identity in the file is added unless recsys.behavior_events already holds it. Only the
-- loaded events inside the file's time range [min_at, max_at] are compared, so a nightly file is
-- checked against one night, not the whole history. Rows go in sorted by time, which keeps the
-- primary-key index inserts sequential (several times faster than random ones on large loads).
-- Params: load_id, min_at, max_at. The loader reads the number of events added from the row
-- count (counting returned rows cost a tenth of the insert's time).

with firsts as (
    select distinct on (event_at_v, event_id_v) *
    from pg_temp.events_checked
    where not is_rejected
    order by event_at_v asc, event_id_v asc, row_number asc
),

loaded as (
    select
        b.event_id,
        b.event_at
    from recsys.behavior_events as b
    where b.event_at >= %(min_at)s and b.event_at <= %(max_at)s
)

insert into recsys.behavior_events (
    event_id, user_id, session_id, event_at, action, product_category, channel, amount,
    discount_used, free_shipping_used, load_id
)
select
    f.event_id_v,
    f.user_id_v,
    f.session_id,
    f.event_at_v,
    f.action,
    f.product_category,
    f.channel,
    round(f.amount_v, 2) as amount,
    f.discount_used_v,
    f.free_shipping_used_v,
    %(load_id)s as load_id
from firsts as f
where
    not exists (
        select from loaded as l
        where l.event_id = f.event_id_v and l.event_at = f.event_at_v
    )
order by f.event_at_v
