-- The latest model trained for a campaign date: a re-run of the night reuses it. The rule
-- heuristic crowned before a night's training is not trained: a night that stopped after
-- crowning it trains again.
select
    model_version,
    training_mode,
    gate_decision,
    is_champion,
    total_timesteps
from recsys.policy_models
where trained_on = %(day)s and algorithm <> 'rule_heuristic'
order by created_at desc
limit 1
