-- a re-run, a sharded run or a date that already has offers: merge on (campaign_date, user_id), replacing
-- only still-scheduled offers; offers: the select of offers_select.sql
insert into recsys.campaign_offers as o (
    run_id, campaign_date, user_id, action_id, offer_type, offer_value, value_unit, product_category, channel,
    timing, scheduled_at, expires_at, max_attempts, subject, body, model_version, propensity, is_exploration,
    features_as_of, segment
)
{offers}
on conflict (campaign_date, user_id) do update
    set
        run_id = excluded.run_id,
        action_id = excluded.action_id,
        offer_type = excluded.offer_type,
        offer_value = excluded.offer_value,
        value_unit = excluded.value_unit,
        product_category = excluded.product_category,
        channel = excluded.channel,
        timing = excluded.timing,
        scheduled_at = excluded.scheduled_at,
        expires_at = excluded.expires_at,
        max_attempts = excluded.max_attempts,
        subject = excluded.subject,
        body = excluded.body,
        model_version = excluded.model_version,
        propensity = excluded.propensity,
        is_exploration = excluded.is_exploration,
        features_as_of = excluded.features_as_of,
        segment = excluded.segment,
        updated_at = clock_timestamp()
    where o.status = 'scheduled'
