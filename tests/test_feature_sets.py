"""The observation grows without orphaning registered models: a model trained on an earlier feature
set reads its own columns out of today's observation (PPO actors, stored response models), stays
champion until a challenger beats it, and a set this version does not know is refused by name."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from recsys.benchmark.toy import plausible_observations, toy_ppo, toy_ppo_artifact, toy_record
from recsys.config.catalog import load_catalog
from recsys.config.features import (
    EARLIER_FEATURE_SETS,
    FEATURES,
    PRIOR_SHRUNK_FEATURES,
    STORED_FEATURES,
)
from recsys.config.reward import load_reward_rules
from recsys.errors import ConfigError, RecsysError
from recsys.evaluation.registry import load_policy
from recsys.model.observation import (
    FEATURE_NAMES,
    N_FEATURES,
    feature_columns,
    feature_fingerprint,
    fingerprint_of,
    normalise,
)
from recsys.model.policy import PPOPolicy
from recsys.model.response import HeadParams, ResponseModel, prior_response_model
from recsys.model.response_terms import HEADS
from recsys.orchestration.train_mode import no_champion_reason, resolve_mode

EARLIER = EARLIER_FEATURE_SETS[0]
PRIOR_COLUMNS = [FEATURE_NAMES.index(name) for name, _, _ in PRIOR_SHRUNK_FEATURES]


def _shuffle_prior_columns(obs: np.ndarray, seed: int) -> np.ndarray:
    """The same users with other values in the prior-shrunk columns only."""
    out = obs.copy()
    out[:, PRIOR_COLUMNS] = np.random.default_rng(seed).random((len(obs), len(PRIOR_COLUMNS)))
    return out


def test_the_earlier_set_is_the_one_models_were_registered_with() -> None:
    """The fingerprint stored with every model trained before migration 013's columns joined the
    observation: a change to the earlier set's columns, transforms or scales would orphan them."""
    assert fingerprint_of(EARLIER) == "49e1dfb32ff173c3b3026bef55a9e58ad39f3fa447f977f79675b12e5dd2738a"


def test_an_earlier_set_reads_its_own_columns_out_of_todays_observation() -> None:
    columns = feature_columns(fingerprint_of(EARLIER))
    assert columns is not None and len(columns) == len(EARLIER) < N_FEATURES
    assert tuple(FEATURES[j] for j in columns) == EARLIER
    assert feature_columns(feature_fingerprint()) is None
    with pytest.raises(RecsysError, match="feature set 0123456789ab is not one this version knows"):
        feature_columns("0123456789ab" + "0" * 52)


def test_a_ppo_model_of_the_earlier_set_scores_and_ignores_the_new_columns() -> None:
    catalog = load_catalog()
    obs = plausible_observations(200, seed=3)
    mask = np.ones((len(obs), catalog.n_actions), dtype=bool)
    model = toy_ppo(catalog, seed=2, n_features=len(EARLIER))
    with pytest.raises(RecsysError, match="another feature set"):
        PPOPolicy(model, catalog)
    policy = PPOPolicy(model, catalog, feature_columns=feature_columns(fingerprint_of(EARLIER)))
    probs = policy.probabilities(obs, mask)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert np.array_equal(probs, policy.probabilities(_shuffle_prior_columns(obs, 1), mask))
    behaviour = obs.copy()
    behaviour[:, FEATURE_NAMES.index("recency_days")] = 1 - behaviour[:, FEATURE_NAMES.index("recency_days")]
    assert not np.allclose(probs, policy.probabilities(behaviour, mask))


def test_the_registry_loads_a_champion_of_the_earlier_set_and_keeps_it_champion() -> None:
    catalog = load_catalog()
    record = toy_record(
        catalog,
        "old",
        toy_ppo_artifact(catalog, seed=4, n_features=len(EARLIER)),
        seed=4,
        trained_on=dt.date(2026, 6, 1),
        total_timesteps=64,
        feature_fingerprint=fingerprint_of(EARLIER),
    )
    record.check_compatible(catalog)
    policy = load_policy(record, catalog)
    actions, chosen = policy.act(plausible_observations(50, seed=5), np.ones((50, catalog.n_actions), dtype=bool))
    assert (actions >= 0).all() and (chosen > 0).all()
    # it stays the champion; a fine-tune cannot continue its narrower network: tonight retrains
    assert no_champion_reason(record, catalog) == ""
    mode, why = resolve_mode("auto", record, catalog, parent=None)
    assert mode == "retrain" and "an earlier feature set" in why
    unknown = toy_record(catalog, "odd", b"", seed=4, trained_on=dt.date(2026, 6, 1), total_timesteps=64)
    unknown.feature_fingerprint = "f" * 64
    with pytest.raises(RecsysError, match="model odd reads a feature set this version cannot build"):
        unknown.check_compatible(catalog)
    assert "cannot build its features" in no_champion_reason(unknown, catalog)


def test_a_stored_response_model_of_the_earlier_set_round_trips_and_reads_only_its_columns() -> None:
    catalog, rules = load_catalog(), load_reward_rules()
    design = tuple(name for name, _, _ in EARLIER if name in STORED_FEATURES)
    today = prior_response_model(catalog, rules)
    d = len(today.design_features)
    keep = [today.design_features.index(name) for name in design]
    # today's prior, cut to the earlier set's design features: a model as the previous version stored it
    params = {h: HeadParams(today.params[h].w[keep], today.params[h].gamma, today.params[h].D[:, keep]) for h in HEADS}
    assert all(today.params[h].D.shape[1] == d for h in HEADS)
    old = ResponseModel(catalog, rules, params, {"kind": "earlier"}, design, fingerprint_of(EARLIER))
    stored = json.loads(json.dumps(old.to_dict()))
    assert stored["feature_fingerprint"] == fingerprint_of(EARLIER) and stored["design_features"] == list(design)
    back = ResponseModel.from_dict(stored, catalog)
    obs = plausible_observations(100, seed=6)
    rewards = back.reward_matrix(obs)
    assert np.array_equal(rewards, old.reward_matrix(obs))
    assert np.array_equal(rewards, back.reward_matrix(_shuffle_prior_columns(obs, 2)))
    # the prior puts no weight on the prior-shrunk columns either: the two agree on every user
    assert np.allclose(rewards, today.reward_matrix(obs))

    stored["feature_fingerprint"] = "e" * 64
    with pytest.raises(ConfigError, match="another observation definition"):
        ResponseModel.from_dict(stored, catalog)
    stored["feature_fingerprint"] = fingerprint_of(EARLIER)
    stored["design_features"] = [*design, "email_open_rate"]
    with pytest.raises(ConfigError, match="do not match its feature set"):
        ResponseModel.from_dict(stored, catalog)


def test_normalising_in_place_gives_the_same_observations_as_a_copy() -> None:
    """Scoring normalises its float32 feature matrix in place (column-major, one column at a time
    in float64): the very observations `normalise` returns for the same values as float64,
    negative, large and NaN ones included; a wrong `out` is refused."""
    rng = np.random.default_rng(7)
    raw = (rng.gamma(1.0, 300.0, (5_000, N_FEATURES)) - 50.0).astype(np.float32)
    raw[::97, 3] = np.nan
    expected = normalise(raw.astype(np.float64))
    matrix = np.asfortranarray(raw)
    out = normalise(matrix, out=matrix)
    assert out is matrix and out.dtype == np.float32
    assert np.array_equal(out, expected, equal_nan=True)
    assert np.array_equal(normalise(raw), expected, equal_nan=True)
    with pytest.raises(ValueError, match="float32"):
        normalise(raw, out=np.empty(raw.shape))
