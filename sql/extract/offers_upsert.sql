-- Write the valid staged past offers on offer_id: the later row of the file, and the later load,
-- win (outcomes of past offers may be completed by a later file). An offer already stored is
-- updated only where the file changes it (a row sent again as it is counts as already present,
-- its load_id stays that of the load that set it), and a new one is inserted after an anti-join:
-- a plain insert and an update of the changed rows instead of an upsert, which inserted each row
-- speculatively and rewrote every row already there. The caller locks offer_history against other
-- writers first (two loads of the same new offer cannot both insert it). Params: load_id.
-- Returns the number of offers inserted or changed.

with latest as materialized (
    select distinct on (offer_id)
        offer_id,
        user_id_v as user_id,
        sent_at_v as sent_at,
        offer_type,
        round(offer_value_v, 2) as offer_value,
        channel,
        timing,
        propensity_v::double precision as propensity,
        opened_v as opened,
        clicked_v as clicked,
        converted_v as converted,
        round(revenue_v, 2) as revenue
    from pg_temp.offers_checked
    where not is_rejected
    order by offer_id asc, row_number desc
),

changed as (
    update recsys.offer_history as h
    set
        user_id = l.user_id,
        sent_at = l.sent_at,
        offer_type = l.offer_type,
        offer_value = l.offer_value,
        channel = l.channel,
        timing = l.timing,
        propensity = l.propensity,
        opened = l.opened,
        clicked = l.clicked,
        converted = l.converted,
        revenue = l.revenue,
        load_id = %(load_id)s
    from latest as l
    where
        h.offer_id = l.offer_id
        and (
            h.user_id, h.sent_at, h.offer_type, h.offer_value, h.channel, h.timing, h.propensity,
            h.opened, h.clicked, h.converted, h.revenue
        ) is distinct from (
            l.user_id, l.sent_at, l.offer_type, l.offer_value, l.channel, l.timing, l.propensity,
            l.opened, l.clicked, l.converted, l.revenue
        )
    returning 1
),

added as (
    insert into recsys.offer_history (
        offer_id, user_id, sent_at, offer_type, offer_value, channel, timing, propensity, opened,
        clicked, converted, revenue, load_id
    )
    select
        l.offer_id,
        l.user_id,
        l.sent_at,
        l.offer_type,
        l.offer_value,
        l.channel,
        l.timing,
        l.propensity,
        l.opened,
        l.clicked,
        l.converted,
        l.revenue,
        %(load_id)s
    from latest as l
    where
        not exists (
            select from recsys.offer_history as h
            where h.offer_id = l.offer_id
        )
    returning 1
)

select (select count(*) from changed) + (select count(*) from added)
