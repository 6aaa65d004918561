-- How many decisions of a window the readers can use, counted on a small uniform sample of them:
-- the decisions of recsys.v_logged_offers in the window of logged_offers.sql (the same
-- parameters: sent_from, sent_before, decided_from, decided_before, with_rests), those whose offer
-- id hashes (with sample_seed, as logged_offers.sql hashes) below probe_rate. A larger read at
-- the same seed keeps every decision counted here. One row per part: decisions of recent_from or
-- later (is_recent; none when recent_from is null) and the others. Usable: the features of the
-- decision's day and a known propensity (what off-policy evaluation reads; the response model's
-- fit reads with_features). The readers size their database samples with the shares
-- (recsys.data.logged_sample.probe_window): half of a large shop's logged offers can lack the
-- features of their day, and a sample sized for all of them fell short and was read again.
select
    coalesce(o.features_as_of >= %(recent_from)s::date, false) as is_recent,
    count(*) as decisions,
    count(*) filter (where o.has_features) as with_features,
    count(*) filter (where o.has_features and o.propensity is not null) as usable
from recsys.v_logged_offers as o
where
    (%(sent_from)s::timestamptz is null or o.sent_at >= %(sent_from)s::timestamptz)
    and (%(sent_before)s::timestamptz is null or o.sent_at < %(sent_before)s::timestamptz)
    and (%(decided_from)s::date is null or o.features_as_of >= %(decided_from)s::date)
    and (%(decided_before)s::date is null or o.features_as_of < %(decided_before)s::date)
    and (%(with_rests)s or o.decision = 'offer')
    and (hashtextextended(o.offer_id, %(sample_seed)s::bigint) & 4294967295)::float8 / 4294967296.0
    < %(probe_rate)s::float8
group by 1
