-- What learning and off-policy evaluation read: each logged decision with the features the system
-- had when it was made (features as of the day the offer was sent: events before that day only).
-- The columns of v_offer_log are listed, not o.*: an outcome column added there later goes last
-- here, so `create or replace view` keeps working on existing databases. The same for feature
-- columns: migration 013's prior-shrunk ones come after unsubscribed, and decision after them.
--
-- Two kinds of decision (column decision, last):
--   - offer: every logged offer of v_offer_log (past campaigns from files, the system's own sent
--     offers once their attribution window closed), with its outcome;
--   - rest: the policy chose no offer (campaign_decisions, decision 'rest', of published runs): the
--     rest action (offer_type no_offer, value 0, channel and timing none), its propensity, and the
--     reward known exactly: nothing sent, so no open, click, conversion, revenue or unsubscribe.
--     Its moment (sent_at) is the night, campaign_date 00:00 UTC; it appears once every offer of
--     the night can have been sent and attributed (below), so a night's rests never enter the logs
--     before its offers. Its offer_id is 'rest:<campaign_date>:<user_id>' (one decision per user
--     and night).
-- Holdouts (no decision was carried out) and users skipped by a hard rule are not decisions of
-- the policy and are not here. Rests are not in v_offer_log: a rest is no contact, so it is no
-- part of a user's contact history.

create or replace view recsys.v_logged_offers as
with offers as (
    select
        o.*,
        'offer'::text as decision
    from recsys.v_offer_log as o
),

rests as (
    select
        'rest:' || d.campaign_date::text || ':' || d.user_id::text as offer_id,
        'campaign'::text as source,
        d.user_id,
        d.campaign_date::timestamp at time zone 'UTC' as sent_at,
        d.features_date as features_as_of,
        'no_offer'::text as offer_type,
        0::numeric(12, 2) as offer_value,
        'none'::text as channel,
        'none'::text as timing,
        d.propensity,
        false as opened,
        false as clicked,
        false as converted,
        0::numeric(14, 2) as revenue,
        false as unsubscribed,
        'rest'::text as decision
    from recsys.campaign_decisions as d
    inner join recsys.campaign_runs as r
        on d.run_id = r.run_id
    where
        d.decision = 'rest'
        and r.state = 'published'
        and not r.dry_run
        -- once every offer of the night can have been sent and its outcome counted: the night's
        -- last local day ends about 12 h after its UTC end (the westmost zones), an offer can be
        -- sent up to its validity later (a best_hour send, a retry), then the attribution window
        and (d.campaign_date + 1)::timestamp at time zone 'UTC'
        + make_interval(hours => 12 + coalesce((r.settings ->> 'validity_hours')::integer, 24))
        + recsys.attribution_window()
        <= now()
),

decisions as (
    select * from offers
    union all
    select * from rests
),

final as (
    select
        o.offer_id,
        o.source,
        o.user_id,
        o.sent_at,
        o.features_as_of,
        o.offer_type,
        o.offer_value,
        o.channel,
        o.timing,
        o.propensity,
        o.opened,
        o.clicked,
        o.converted,
        o.revenue,
        f.as_of is not null as has_features,
        f.recency_days,
        f.frequency_sessions,
        f.monetary_value,
        f.engagement_score,
        f.discount_sensitivity,
        f.free_shipping_preference,
        f.email_responsiveness,
        f.sms_responsiveness,
        f.push_responsiveness,
        f.days_since_last_purchase,
        f.purchase_count,
        f.offers_last_7d,
        f.days_since_last_offer,
        f.morning_share,
        f.evening_share,
        f.category_focus,
        f.segment,
        o.unsubscribed,
        f.email_open_rate,
        f.sms_open_rate,
        f.push_open_rate,
        f.email_click_rate,
        f.sms_click_rate,
        f.push_click_rate,
        f.discount_click_rate,
        f.free_shipping_click_rate,
        f.recommendation_click_rate,
        f.bundle_click_rate,
        f.discount_convert_rate,
        f.free_shipping_convert_rate,
        f.recommendation_convert_rate,
        f.bundle_convert_rate,
        f.organic_discount_share,
        f.offer_discount_share,
        f.organic_free_shipping_share,
        f.offer_free_shipping_share,
        f.category_focus_posterior,
        f.order_value,
        o.decision
    from decisions as o
    left join recsys.user_features as f
        on o.features_as_of = f.as_of and o.user_id = f.user_id
)

select * from final;

comment on view recsys.v_logged_offers is
'Logged decisions with point-in-time features (as of the decision''s day), propensity and outcome: '
'offers (v_offer_log) and rests (the policy chose no offer: reward 0), told apart by decision.';
