-- Every offer sent, logged or the system's own, with its outcome within the attribution window
-- (recsys.attribution_window()) as far as it is known: past campaigns from input files
-- (offer_history) and the system's own sent offers (campaign_offers with offer_events), whatever the
-- state of their window. What a point-in-time reader takes its contacts from: the features of a
-- date count every offer sent before it and judge an outcome only once its window closed before
-- that date (sql/features/user_stats.sql), so no date depends on when it is built. Learning reads
-- v_offer_log, these rows once the own offers' windows closed by the wall clock.
-- Columns as v_offer_log's (documented there): an own offer still in its window shows what has been
-- reported so far (false and 0 until then), not a final outcome.

create or replace view recsys.v_sent_offers as
with history as (
    select
        h.offer_id,
        'history'::text as source,
        h.user_id,
        h.sent_at,
        (h.sent_at at time zone 'UTC')::date as features_as_of,
        h.offer_type,
        h.offer_value,
        h.channel,
        h.timing,
        h.propensity,
        h.opened,
        h.clicked,
        h.converted,
        h.revenue,
        null::boolean as unsubscribed
    from recsys.offer_history as h
),

own as (
    select
        o.offer_id::text as offer_id,
        'campaign'::text as source,
        o.user_id,
        o.sent_at,
        o.features_as_of,
        o.offer_type,
        o.offer_value::numeric(12, 2) as offer_value,
        o.channel,
        o.timing,
        o.propensity,
        coalesce(e.opened, false) as opened,
        coalesce(e.clicked, false) as clicked,
        coalesce(e.converted, false) as converted,
        coalesce(e.revenue, 0)::numeric(14, 2) as revenue,
        coalesce(e.unsubscribed, false) as unsubscribed
    from recsys.campaign_offers as o
    -- an offer has at most one event of each kind (the key is offer_id, event): they are read by the
    -- key alone and the window is applied to them here. With the window in the WHERE, the planner
    -- could AND the key with a range scan of offer_events_event_at_idx (every event before the
    -- window's end, tens of thousands of rows per offer): seen on a 5,000-user simulation, where
    -- the features took 45 s instead of 1 s
    left join lateral (
        select
            bool_or(ev.event in ('opened', 'clicked', 'unsubscribed')) filter (where ev.inside) as opened,
            bool_or(ev.event = 'clicked') filter (where ev.inside) as clicked,
            bool_or(ev.event = 'converted') filter (where ev.inside) as converted,
            sum(ev.revenue) filter (where ev.inside and ev.event = 'converted') as revenue,
            bool_or(ev.event = 'unsubscribed') filter (where ev.inside) as unsubscribed
        from (
            select
                x.event,
                x.revenue,
                x.event_at < o.sent_at + recsys.attribution_window() as inside
            from recsys.offer_events as x
            where x.offer_id = o.offer_id
        ) as ev
    ) as e on true
    where o.status = 'sent'
),

final as (
    select * from history
    union all
    select * from own
)

select * from final;

comment on view recsys.v_sent_offers is
'Every offer sent, past campaigns (source history) and the system''s own (source campaign), with its '
'outcome within the attribution window as reported so far: what point-in-time readers filter by date.';
