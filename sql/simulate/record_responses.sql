-- the outcomes through the sender protocol; events dated in the future are not recorded
select count(recsys.record_offer_event(e.offer_id, e.event, e.event_at, e.revenue))
from
    unnest(%(ids)s::bigint[], %(events)s::text[], %(times)s::timestamptz[], %(revenue)s::numeric[])
        as e (offer_id, event, event_at, revenue)
where e.event_at <= now()
