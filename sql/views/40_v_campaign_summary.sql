-- Analysts' campaign summary: per run, campaign date, channel, offer type, timing and segment, what
-- was offered and what came of it, and the lift of the treated group over the holdout.
--
-- Groups: an offer belongs to its own channel, offer type, timing and segment; a rested user
-- (campaign_decisions: the policy chose no offer tonight) to the rest's group (offer type
-- 'no_offer', channel and timing 'none'); a holdout user to the action the policy would have chosen
-- (campaign_holdout, possibly the rest), so each row compares like with like. Treated users are
-- every user scored and not held out: offered (sent or not) or rested (intent to treat); summed over
-- a run's groups they are the whole treated arm. Holdout users are every user held out. A user purchased when behavior_events holds a purchase of theirs in
-- [campaign_date 00:00 UTC, + recsys.attribution_window()). lift is the difference of the purchase
-- rates, with a 95% normal-approximation interval for a difference of two proportions
-- (lift +- 1.959964 * sqrt(p1 (1 - p1) / n1 + p0 (1 - p0) / n0)); rates and lift are null when a
-- group is empty. is_window_closed says whether the purchase window is over (until then the rates
-- still grow).

create or replace view recsys.v_campaign_summary as
with groups as (
    select
        o.run_id,
        o.campaign_date,
        o.channel,
        o.offer_type,
        o.timing,
        o.segment,
        o.user_id,
        true as is_treated,
        true as is_offer,
        o.status = 'sent' as is_sent,
        coalesce(e.delivered, false) as delivered,
        coalesce(e.opened, false) as opened,
        coalesce(e.clicked, false) as clicked,
        coalesce(e.converted, false) as converted,
        e.revenue
    from recsys.campaign_offers as o
    left join lateral (
        select
            bool_or(ev.event = 'delivered') as delivered,
            bool_or(ev.event = 'opened') as opened,
            bool_or(ev.event = 'clicked') as clicked,
            bool_or(ev.event = 'converted') as converted,
            sum(ev.revenue) filter (where ev.event = 'converted') as revenue
        from recsys.offer_events as ev
        where ev.offer_id = o.offer_id
    ) as e on true
    union all
    select
        d.run_id,
        d.campaign_date,
        'none' as channel,
        'no_offer' as offer_type,
        'none' as timing,
        d.segment,
        d.user_id,
        true as is_treated,
        false as is_offer,
        false as is_sent,
        false as delivered,
        false as opened,
        false as clicked,
        false as converted,
        null::numeric as revenue
    from recsys.campaign_decisions as d
    where d.decision = 'rest'
    union all
    select
        h.run_id,
        h.campaign_date,
        h.channel,
        h.offer_type,
        h.timing,
        h.segment,
        h.user_id,
        false as is_treated,
        false as is_offer,
        false as is_sent,
        false as delivered,
        false as opened,
        false as clicked,
        false as converted,
        null::numeric as revenue
    from recsys.campaign_holdout as h
),

purchases as (
    select
        g.*,
        exists(
            select from recsys.behavior_events as b
            where
                b.user_id = g.user_id
                and b.action = 'purchase'
                and b.event_at >= g.campaign_date::timestamp at time zone 'UTC'
                and b.event_at < (g.campaign_date::timestamp at time zone 'UTC') + recsys.attribution_window()
        ) as has_purchased
    from groups as g
),

counted as (
    select
        run_id,
        campaign_date,
        channel,
        offer_type,
        timing,
        segment,
        count(*) filter (where is_offer) as offers,
        count(*) filter (where is_sent) as sent,
        count(*) filter (where delivered) as delivered,
        count(*) filter (where opened) as opened,
        count(*) filter (where clicked) as clicked,
        count(*) filter (where converted) as converted,
        coalesce(sum(revenue), 0)::numeric(14, 2) as revenue,
        -- a user has at most one offer or holdout row per campaign date: rows are users (no sort)
        count(*) filter (where is_treated) as treated_users,
        count(*) filter (where not is_treated) as holdout_users,
        count(*) filter (where is_treated and has_purchased) as treated_purchasers,
        count(*) filter (where not is_treated and has_purchased) as holdout_purchasers
    from purchases
    group by run_id, campaign_date, channel, offer_type, timing, segment
),

rates as (
    select
        *,
        treated_purchasers::double precision / nullif(treated_users, 0) as treated_purchase_rate,
        holdout_purchasers::double precision / nullif(holdout_users, 0) as holdout_purchase_rate
    from counted
),

lifts as (
    select
        *,
        treated_purchase_rate - holdout_purchase_rate as lift,
        -- half the width of the 95% interval
        1.959964 * sqrt(
            treated_purchase_rate * (1 - treated_purchase_rate) / treated_users
            + holdout_purchase_rate * (1 - holdout_purchase_rate) / holdout_users
        ) as lift_margin
    from rates
),

final as (
    select
        run_id,
        campaign_date,
        channel,
        offer_type,
        timing,
        segment,
        offers,
        sent,
        delivered,
        opened,
        clicked,
        converted,
        revenue,
        treated_users,
        holdout_users,
        treated_purchase_rate,
        holdout_purchase_rate,
        lift,
        lift - lift_margin as lift_ci_low,
        lift + lift_margin as lift_ci_high,
        (campaign_date::timestamp at time zone 'UTC') + recsys.attribution_window() <= now() as is_window_closed
    from lifts
)

select * from final;

comment on view recsys.v_campaign_summary is
'Per run, campaign date, channel, offer type, timing and segment: offers, sent, delivered, opened, '
'clicked, converted, revenue; treated users (offered or rested: intent to treat; the rest is offer type '
'no_offer, channel and timing none) and holdout users, their purchase rates within the attribution '
'window from the campaign date, lift (difference) and its 95% normal-approximation interval.';
