-- the decisions into target, a new standalone partition; offers: the select of offers_select.sql
insert into {target} as o (
    run_id, campaign_date, user_id, action_id, offer_type, offer_value, value_unit, product_category, channel,
    timing, scheduled_at, expires_at, max_attempts, subject, body, model_version, propensity, is_exploration,
    features_as_of, segment
)
{offers}
