insert into recsys.campaign_holdout (
    run_id, campaign_date, user_id, action_id, offer_type, offer_value, channel, timing, model_version,
    features_as_of, segment
)
select
    %(run_id)s as run_id,
    %(day)s as campaign_date,
    s.user_id,
    s.action_id,
    a.offer_type,
    a.offer_value,
    a.channel,
    a.timing,
    %(model)s as model_version,
    %(day)s as features_as_of,
    g.name as segment
from stage_offers as s
inner join stage_actions as a on s.action_id = a.action_id
inner join stage_codes as g on g.kind = 'segment' and s.segment_code = g.code
where s.is_holdout
