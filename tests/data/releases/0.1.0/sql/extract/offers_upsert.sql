-- Upsert the valid staged past offers on offer_id: the later row of the file, and the later load,
-- win (outcomes of past offers may be completed by a later file). Params: load_id.
-- Returns the number of offers inserted or updated.

with latest as (
    select distinct on (offer_id) *
    from pg_temp.offers_checked
    where not is_rejected
    order by offer_id asc, row_number desc
),

upserted as (
    insert into recsys.offer_history as h (
        offer_id, user_id, sent_at, offer_type, offer_value, channel, timing, propensity, opened,
        clicked, converted, revenue, load_id
    )
    select
        l.offer_id,
        l.user_id_v,
        l.sent_at_v,
        l.offer_type,
        round(l.offer_value_v, 2) as offer_value,
        l.channel,
        l.timing,
        l.propensity_v::double precision as propensity,
        l.opened_v,
        l.clicked_v,
        l.converted_v,
        round(l.revenue_v, 2) as revenue,
        %(load_id)s
    from latest as l
    on conflict (offer_id) do update
        set
            user_id = excluded.user_id,
            sent_at = excluded.sent_at,
            offer_type = excluded.offer_type,
            offer_value = excluded.offer_value,
            channel = excluded.channel,
            timing = excluded.timing,
            propensity = excluded.propensity,
            opened = excluded.opened,
            clicked = excluded.clicked,
            converted = excluded.converted,
            revenue = excluded.revenue,
            load_id = excluded.load_id
    returning 1
)

select count(*) from upserted
