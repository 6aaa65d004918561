-- What learning and off-policy evaluation read: each logged decision with the features the system
-- had when it was made (features as of the day the offer was sent: events before that day only).
-- The columns of v_offer_log are listed, not o.*: an outcome column added there later goes last
-- here, so `create or replace view` keeps working on existing databases. The same for feature
-- columns: migration 013's prior-shrunk ones come last.

create or replace view recsys.v_logged_offers as
with offers as (
    select * from recsys.v_offer_log
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
        f.order_value
    from offers as o
    left join recsys.user_features as f
        on o.features_as_of = f.as_of and o.user_id = f.user_id
)

select * from final;

comment on view recsys.v_logged_offers is
'Logged decisions with point-in-time features (as of the send date), propensity and outcome.';
