-- 002: the model registry. Every trained policy is registered with what it needs to be
-- reproduced, judged and used: its catalog and feature fingerprints, its evaluation and the
-- promotion gate's decision. At most one row is the champion.

create table recsys.policy_models (
    model_version text primary key,
    parent_version text references recsys.policy_models (model_version),
    algorithm text not null,
    training_mode text not null check (training_mode in ('retrain', 'fine_tune')),
    hyperparameters jsonb not null,
    seed bigint not null,
    catalog_fingerprint text not null,
    feature_fingerprint text not null,
    catalog jsonb not null,
    trained_on date not null,
    training_window_start date,
    training_window_end date,
    total_timesteps bigint not null,
    train_seconds double precision,
    response_model jsonb not null default '{}'::jsonb,
    evaluation jsonb not null default '{}'::jsonb,
    gate_decision text check (gate_decision in ('bootstrap', 'promoted', 'rejected')),
    gate_reasons jsonb not null default '[]'::jsonb,
    is_champion boolean not null default false,
    artifact bytea not null,
    artifact_sha256 text not null,
    created_at timestamptz not null default clock_timestamp(),
    promoted_at timestamptz
);
create unique index policy_models_one_champion_idx on recsys.policy_models (is_champion) where is_champion;
comment on table recsys.policy_models is 'Every trained policy, its evaluation and the promotion gate''s decision; at most one champion.';
comment on column recsys.policy_models.model_version is 'Identifier of the model, e.g. ppo-20261129T0200-1a2b3c.';
comment on column recsys.policy_models.parent_version is 'The champion a fine-tuned model continued from; null for a retrain.';
comment on column recsys.policy_models.algorithm is 'Learning algorithm (PPO).';
comment on column recsys.policy_models.training_mode is 'retrain (from scratch) or fine_tune (continued from the parent).';
comment on column recsys.policy_models.hyperparameters is 'The training hyperparameters, as a JSON object.';
comment on column recsys.policy_models.seed is 'The one seed that fed every random generator of the training.';
comment on column recsys.policy_models.catalog_fingerprint is 'sha256 of the action list the model chooses from.';
comment on column recsys.policy_models.feature_fingerprint is 'sha256 of the observation definition the model reads.';
comment on column recsys.policy_models.catalog is 'The action list: action_id -> offer type, value, channel, timing.';
comment on column recsys.policy_models.trained_on is 'as_of date of the features the model was trained on.';
comment on column recsys.policy_models.training_window_start is 'First send date of the logged offers the response model learned from.';
comment on column recsys.policy_models.training_window_end is 'Last send date of the logged offers the response model learned from.';
comment on column recsys.policy_models.total_timesteps is 'Environment steps of training, cumulative across fine-tunes.';
comment on column recsys.policy_models.train_seconds is 'Wall-clock seconds the training took.';
comment on column recsys.policy_models.response_model is 'The response model the environment simulated, with its fit on held-out logs.';
comment on column recsys.policy_models.evaluation is 'Evaluation results: simulator value, baselines, off-policy estimates.';
comment on column recsys.policy_models.gate_decision is 'bootstrap (first champion), promoted, or rejected.';
comment on column recsys.policy_models.gate_reasons is 'The gate''s checks and numbers, as a JSON list.';
comment on column recsys.policy_models.is_champion is 'The model scoring uses.';
comment on column recsys.policy_models.artifact is 'The Stable-Baselines3 model zip.';
comment on column recsys.policy_models.artifact_sha256 is 'sha256 of the artifact.';
comment on column recsys.policy_models.created_at is 'When the model was registered.';
comment on column recsys.policy_models.promoted_at is 'When it became champion, if it did.';
