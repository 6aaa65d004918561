-- The latest model trained for a campaign date: a re-run of the night reuses it.
select
    model_version,
    training_mode,
    gate_decision,
    is_champion,
    total_timesteps
from recsys.policy_models
where trained_on = %(day)s
order by created_at desc
limit 1
