-- Upper bounds, from the base tables alone, of the offers recsys.v_logged_offers holds sent with
-- sent_from <= sent_at < sent_before (each null: open), split at the decision date recent_from:
-- every past-campaign offer and every sent offer of the system's own (also those whose
-- attribution window is still open). The response model's fit sizes its database sample with
-- them (recsys.data.logged_offers); the view's own count costs a pass over its joins.
with offers as (
    select (h.sent_at at time zone 'UTC')::date as features_as_of
    from recsys.offer_history as h
    where
        (%(sent_from)s::timestamptz is null or h.sent_at >= %(sent_from)s::timestamptz)
        and (%(sent_before)s::timestamptz is null or h.sent_at < %(sent_before)s::timestamptz)
    union all
    select o.features_as_of
    from recsys.campaign_offers as o
    where
        o.status = 'sent'
        and (%(sent_from)s::timestamptz is null or o.sent_at >= %(sent_from)s::timestamptz)
        and (%(sent_before)s::timestamptz is null or o.sent_at < %(sent_before)s::timestamptz)
)

select
    count(*) filter (where features_as_of >= %(recent_from)s::date) as recent,
    count(*) filter (where features_as_of < %(recent_from)s::date) as older
from offers
