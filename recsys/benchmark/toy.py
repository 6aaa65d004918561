"""A toy PPO policy of the production shapes and plausible observations, for the tests and benches.

A one-step Gymnasium environment with the model's observations and the catalog's actions, and a real
Stable-Baselines3 PPO trained on it for a few steps: its network has the shapes of a trained
champion (N_FEATURES inputs, one logit per action, SB3's default 64x64 MLP), not its quality. It
exercises the batch policy API, the registry and campaign scoring, where a real training run would
take minutes.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import gymnasium as gym
import numpy as np

from recsys.config.catalog import Catalog
from recsys.config.features import PRIOR_SHRUNK_FEATURES
from recsys.evaluation.registry import ModelRecord, catalog_json
from recsys.model.observation import FEATURE_NAMES, N_FEATURES, feature_fingerprint, normalise
from recsys.model.policy import set_torch_threads


def plausible_observations(n: int = 300, seed: int = 0, **fixed: float) -> np.ndarray:
    """`n` normalised observations of plausible users (raw features drawn from broad ranges, then
    `normalise`); `fixed` sets a raw feature to one value for all of them."""
    rng = np.random.default_rng(seed)
    raw = {
        "recency_days": rng.uniform(0, 120, n),
        "frequency_sessions": rng.poisson(4, n),
        "monetary_value": rng.gamma(2, 60, n),
        "engagement_score": rng.uniform(0, 1, n),
        "discount_sensitivity": rng.uniform(0, 1, n),
        "free_shipping_preference": rng.uniform(0, 1, n),
        "email_responsiveness": rng.uniform(0, 1, n),
        "sms_responsiveness": rng.uniform(0, 1, n),
        "push_responsiveness": rng.uniform(0, 1, n),
        "days_since_last_purchase": rng.uniform(0, 365, n),
        "purchase_count": rng.poisson(2, n),
        "offers_last_7d": rng.integers(0, 4, n),
        "days_since_last_offer": rng.uniform(1, 60, n),
        "morning_share": rng.uniform(0, 1, n),
        "evening_share": rng.uniform(0, 1, n),
        "category_focus": rng.uniform(0, 1, n),
        **{name: rng.beta(2, 8, n) for name, _, _ in PRIOR_SHRUNK_FEATURES if name != "order_value"},
        "order_value": rng.gamma(2, 30, n),
        "email_consent": rng.random(n) < 0.8,
        "sms_consent": rng.random(n) < 0.5,
        "push_consent": rng.random(n) < 0.5,
    } | {k: np.full(n, float(v)) for k, v in fixed.items()}
    return normalise(np.column_stack([raw[name] for name in FEATURE_NAMES]).astype(np.float64))


class ToyEnv(gym.Env):
    """Random observations in [0, 1] (`n_features` wide: today's observation unless an earlier
    set's width is given), `n_actions` actions, one-step episodes, reward `action % 7`."""

    def __init__(self, n_actions: int, n_features: int = N_FEATURES) -> None:
        self.action_space = gym.spaces.Discrete(n_actions)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (n_features,), np.float32)
        self.n_features = n_features

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self.np_random.random(self.n_features, dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self.np_random.random(self.n_features, dtype=np.float32), float(action % 7), True, False, {}


def toy_ppo(catalog: Catalog, seed: int, timesteps: int = 64, n_features: int = N_FEATURES) -> Any:
    """A PPO model over `catalog`'s actions, trained `timesteps` steps on ToyEnv (64 a rollout)."""
    set_torch_threads()
    from stable_baselines3 import PPO

    env = ToyEnv(catalog.n_actions, n_features)
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=seed, device="cpu")
    model.learn(timesteps)
    return model


def ppo_artifact(model: Any) -> bytes:
    """A PPO model as the zip bytes the registry stores."""
    buffer = io.BytesIO()
    model.save(buffer)
    return buffer.getvalue()


def toy_ppo_artifact(catalog: Catalog, seed: int, timesteps: int = 64, n_features: int = N_FEATURES) -> bytes:
    """The zip bytes of `toy_ppo(catalog, seed, timesteps, n_features)`."""
    return ppo_artifact(toy_ppo(catalog, seed, timesteps, n_features))


def toy_record(
    catalog: Catalog,
    version: str,
    artifact: bytes,
    *,
    seed: int,
    trained_on: dt.date,
    total_timesteps: int,
    **fields: Any,
) -> ModelRecord:
    """A registry record of a toy PPO, a retrain with no parent unless `fields` say otherwise."""
    values: dict[str, Any] = {
        "parent_version": None,
        "algorithm": "PPO",
        "training_mode": "retrain",
        "hyperparameters": {},
        "catalog_fingerprint": catalog.fingerprint(),
        "feature_fingerprint": feature_fingerprint(),
        "catalog": catalog_json(catalog),
    }
    values.update(fields)
    return ModelRecord(
        model_version=version,
        seed=seed,
        trained_on=trained_on,
        total_timesteps=total_timesteps,
        artifact=artifact,
        **values,
    )
