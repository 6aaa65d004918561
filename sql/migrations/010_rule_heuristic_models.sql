-- 010: the registry holds non-PPO champions (issue 12, "safe on small data"). A catalog's first
-- champion is the rule heuristic, registered as a model of its own: algorithm 'rule_heuristic',
-- training mode 'baseline', no artifact (the rule is code, recsys.model.baselines) and no
-- training steps. PPO rows are unchanged. No data changes.

alter table recsys.policy_models drop constraint policy_models_training_mode_check;

alter table recsys.policy_models add constraint policy_models_training_mode_check
check (training_mode in ('retrain', 'fine_tune', 'baseline'));

-- a rule row carries nothing trained: an empty artifact and no steps
alter table recsys.policy_models add constraint policy_models_rule_heuristic_check
check (
    algorithm <> 'rule_heuristic'
    or (training_mode = 'baseline' and total_timesteps = 0 and octet_length(artifact) = 0)
);

comment on column recsys.policy_models.algorithm is
'How the model decides: PPO (a Stable-Baselines3 actor in the artifact) or rule_heuristic (the seed '
'project''s rule, code in the package: the conservative baseline a catalog starts with).';

comment on column recsys.policy_models.training_mode is
'retrain (from scratch), fine_tune (continued from the parent) or baseline (the rule heuristic, not trained).';

comment on column recsys.policy_models.total_timesteps is
'Environment steps of training, cumulative across fine-tunes; 0 for the rule heuristic.';

comment on column recsys.policy_models.artifact is
'The Stable-Baselines3 model zip; empty for the rule heuristic (its rule is code).';
