-- The Campaigns page: the newest registered models with their headline numbers and the gate's
-- decision. Params: max_rows.
select
    model_version,
    parent_version,
    algorithm,
    training_mode,
    trained_on,
    total_timesteps,
    simulator_value,
    random_value,
    dr_value,
    dr_lower,
    gate_decision,
    gate_reasons,
    is_champion,
    created_at,
    promoted_at
from recsys.v_model_leaderboard
order by created_at desc
limit %(max_rows)s
