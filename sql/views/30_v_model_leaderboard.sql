-- Analysts' view of the model registry: every model with its headline numbers and the gate's
-- decision, newest first. With the rest in the catalog, simulator_value and dr_value judge the
-- choice among offers (one night, the model conditioned on offering); horizon_value (its value per
-- user-night over the gate's horizon in the simulator, rests included) and horizon_rest_share (its
-- share of rested user-nights there) judge its rests. New columns go last (create or replace view).

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
        m.promoted_at,
        (m.evaluation #>> '{horizon,values,challenger,value}')::double precision as horizon_value,
        (m.evaluation #>> '{horizon,rest_share,challenger}')::double precision as horizon_rest_share
    from recsys.policy_models as m
),

final as (
    select * from models
)

select * from final
order by created_at desc;

comment on view recsys.v_model_leaderboard is
'Every registered policy with its simulator value, off-policy estimate and gate decision, newest first; '
'with the rest, its value over the horizon and its rested share.';
