-- every user the shard scored, with its decision: the staged decisions (codes) as campaign_decisions rows,
-- into target: campaign_decisions, or the date's new standalone partition (attached after)
with staged as (
    select
        s.user_id,
        s.action_id,
        s.propensity,
        s.is_exploration,
        (array['offer', 'rest', 'holdout', 'skipped'])[s.decision_code + 1] as decision,
        (array['no_consent', 'inactive', 'cooldown', 'frequency_cap'])[nullif(s.skip_code, 0)] as skip_reason,
        g.name as segment
    from stage_decisions as s
    left join stage_codes as g on g.kind = 'segment' and s.segment_code = g.code
),

final as (
    select
        %(day)s::date as campaign_date,
        %(run_id)s as run_id,
        user_id,
        decision,
        case when decision <> 'skipped' then action_id end as action_id,
        case when decision <> 'skipped' then propensity end as propensity,
        decision <> 'skipped' and is_exploration as is_exploration,
        %(model)s as model_version,
        %(day)s::date as features_date,
        skip_reason,
        segment
    from staged
)

insert into {target} (
    campaign_date, run_id, user_id, decision, action_id, propensity, is_exploration, model_version,
    features_date, skip_reason, segment
)
select
    campaign_date,
    run_id,
    user_id,
    decision,
    action_id,
    propensity,
    is_exploration,
    model_version,
    features_date,
    skip_reason,
    segment
from final
