-- Analysts' view of the model registry: every model with its headline numbers and the gate's
-- decision, newest first.

create or replace view recsys.v_model_leaderboard as
with models as (
    select
        m.model_version,
        m.parent_version,
        m.algorithm,
        m.training_mode,
        m.trained_on,
        m.total_timesteps,
        m.train_seconds,
        (m.evaluation ->> 'simulator_value')::double precision as simulator_value,
        (m.evaluation ->> 'random_value')::double precision as random_value,
        (m.evaluation ->> 'dr_value')::double precision as dr_value,
        (m.evaluation ->> 'dr_lower')::double precision as dr_lower,
        m.gate_decision,
        m.gate_reasons,
        m.is_champion,
        m.created_at,
        m.promoted_at
    from recsys.policy_models as m
),

final as (
    select * from models
)

select * from final
order by created_at desc;

comment on view recsys.v_model_leaderboard is
'Every registered policy with its simulator value, off-policy estimate and gate decision, newest first.';
