"""The batch policy API and the model registry, on a small real PPO model."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest

from recsys.benchmark.toy import ppo_artifact, toy_ppo, toy_record
from recsys.config.catalog import load_catalog
from recsys.db import Connection, fetch_value
from recsys.errors import RecsysError
from recsys.evaluation.registry import (
    ModelRecord,
    catalog_json,
    champion,
    get_model,
    record_decision,
    register,
)
from recsys.model.baselines import choose
from recsys.model.observation import N_FEATURES
from recsys.model.policy import PPOPolicy, load_sb3_model


@pytest.fixture(scope="module")
def toy_model():
    return toy_ppo(load_catalog(), seed=3, timesteps=128)


def test_batched_probabilities_match_sb3_and_respect_the_mask(toy_model) -> None:
    catalog = load_catalog()
    policy = PPOPolicy(toy_model, catalog)
    rng = np.random.default_rng(0)
    obs = rng.random((1000, N_FEATURES), dtype=np.float32)
    full = np.ones((1000, catalog.n_actions), bool)
    probs = policy.probabilities(obs, full)
    assert np.allclose(probs.sum(axis=1), 1.0)
    greedy, _ = choose(policy, obs, full)
    expected, _ = toy_model.predict(obs, deterministic=True)
    assert np.array_equal(greedy, expected)
    # masked logits: a disallowed action never has probability, whatever the network prefers
    mask = full.copy()
    mask[np.arange(1000), greedy] = False
    mask[:10] = False
    masked = policy.probabilities(obs, mask)
    assert (masked[~mask] == 0).all()
    assert np.allclose(masked[10:].sum(axis=1), 1.0) and (masked[:10] == 0).all()
    actions, p = choose(policy, obs, mask)
    assert (actions[:10] == -1).all() and (p[:10] == 0).all()
    assert mask[np.arange(10, 1000), actions[10:]].all()
    # renormalised over the allowed set: ratios between allowed actions are unchanged
    i = 500
    allowed = np.flatnonzero(mask[i])
    assert np.allclose(masked[i, allowed] / masked[i, allowed].sum(), probs[i, allowed] / probs[i, allowed].sum())


def test_chunking_gives_identical_results(toy_model, monkeypatch: pytest.MonkeyPatch) -> None:
    import recsys.model.policy

    catalog = load_catalog()
    obs = np.random.default_rng(1).random((700, N_FEATURES), dtype=np.float32)
    mask = np.ones((700, catalog.n_actions), bool)
    whole = PPOPolicy(toy_model, catalog).probabilities(obs, mask)
    monkeypatch.setattr(recsys.model.policy, "CHUNK", 64)
    chunked = PPOPolicy(toy_model, catalog).probabilities(obs, mask)
    assert np.allclose(whole, chunked, atol=1e-6)


def test_model_for_another_catalog_is_refused(toy_model) -> None:
    catalog = load_catalog()
    smaller = dataclasses.replace(catalog, values=(5.0, 10.0))
    with pytest.raises(RecsysError, match="chooses among 109 actions but the catalog has 73"):
        PPOPolicy(toy_model, smaller)


def test_unreadable_artifact_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "model.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(RecsysError, match="cannot load a PPO model"):
        load_sb3_model(bad)


def _record(version: str, artifact: bytes, **fields) -> ModelRecord:
    return toy_record(
        load_catalog(),
        version,
        artifact,
        seed=3,
        trained_on=dt.date(2026, 11, 1),
        total_timesteps=128,
        hyperparameters={"n_steps": 64},
        **fields,
    )


def test_registry_keeps_one_champion_and_round_trips_the_artifact(db: Connection, toy_model) -> None:
    with db.cursor() as cur:
        cur.execute("delete from recsys.policy_models")
    artifact = ppo_artifact(toy_model)
    register(db, _record("m1", artifact))
    record_decision(db, "m1", decision="bootstrap", reasons=[{"check": "x", "passed": True}], evaluation={"a": 1})
    register(db, _record("m2", artifact, parent_version="m1", training_mode="fine_tune"))
    record_decision(db, "m2", decision="rejected", reasons=[], evaluation={"b": 2})
    db.commit()
    assert champion(db).model_version == "m1"
    register(db, _record("m3", artifact))
    record_decision(db, "m3", decision="promoted", reasons=[], evaluation={})
    db.commit()
    current = champion(db)
    assert current.model_version == "m3"
    assert fetch_value(db, "select count(*) from recsys.policy_models where is_champion") == 1
    m2 = get_model(db, "m2")
    assert m2.gate_decision == "rejected" and m2.evaluation == {"b": 2} and m2.parent_version == "m1"
    assert m2.artifact == artifact
    assert fetch_value(db, "select artifact_sha256 from recsys.policy_models where model_version = 'm2'") == (
        m2.artifact_sha256
    )
    reloaded = load_sb3_model(current.artifact)
    obs = np.random.default_rng(2).random((50, N_FEATURES), dtype=np.float32)
    assert np.array_equal(reloaded.predict(obs, deterministic=True)[0], toy_model.predict(obs, deterministic=True)[0])
    leaderboard = fetch_value(db, "select count(*) from recsys.v_model_leaderboard")
    assert leaderboard == 3


def test_registered_model_of_another_catalog_is_refused_at_use(db: Connection, toy_model) -> None:
    with db.cursor() as cur:
        cur.execute("delete from recsys.policy_models")
    other = dataclasses.replace(load_catalog(), values=(5.0, 10.0, 20.0))  # 20 is not configured
    old = _record("old", ppo_artifact(toy_model), catalog_fingerprint="0" * 64)
    old.catalog = catalog_json(other)
    register(db, old)
    db.commit()
    with pytest.raises(RecsysError, match="trained on an offer catalog the configured one does not contain"):
        get_model(db, "old").check_compatible(load_catalog())
    with pytest.raises(RecsysError, match="no model 'nope'"):
        get_model(db, "nope")


def test_act_matches_the_probability_matrix_without_building_it(toy_model, monkeypatch: pytest.MonkeyPatch) -> None:
    import recsys.model.policy

    monkeypatch.setattr(recsys.model.policy, "CHUNK", 100)
    catalog = load_catalog()
    rng = np.random.default_rng(4)
    obs = rng.random((450, N_FEATURES), dtype=np.float32)
    mask = rng.random((450, catalog.n_actions)) < 0.3
    mask[:5] = False
    policy = PPOPolicy(toy_model, catalog)
    actions, chosen = policy.act(obs, mask)
    expected_actions, expected_probs = choose(policy, obs, mask)
    assert np.array_equal(actions, expected_actions)
    assert np.allclose(chosen, expected_probs, atol=1e-6)
    assert (actions[:5] == -1).all() and (chosen[:5] == 0).all()


def test_load_policy_runs_ppo_and_the_rule_heuristic_and_refuses_anything_else(db: Connection, toy_model) -> None:
    import psycopg2

    from recsys.evaluation.registry import load_policy, rule_heuristic_record
    from recsys.model.baselines import RuleHeuristicPolicy

    catalog = load_catalog()
    with db.cursor() as cur:
        cur.execute("delete from recsys.policy_models")
    register(db, _record("ppo-1", ppo_artifact(toy_model)))
    rule = rule_heuristic_record(catalog, as_of=dt.date(2026, 11, 1), response_model={})
    register(db, rule)
    db.commit()
    obs = np.random.default_rng(4).random((300, N_FEATURES), dtype=np.float32)
    mask = np.ones((300, catalog.n_actions), bool)
    ppo = load_policy(get_model(db, "ppo-1"), catalog)
    assert isinstance(ppo, PPOPolicy)
    assert np.array_equal(choose(ppo, obs, mask)[0], toy_model.predict(obs, deterministic=True)[0])
    stored = get_model(db, rule.model_version)
    assert (stored.algorithm, stored.artifact, stored.total_timesteps) == ("rule_heuristic", b"", 0)
    policy = load_policy(stored, catalog)
    assert isinstance(policy, RuleHeuristicPolicy) and policy.name == rule.model_version
    assert np.array_equal(policy.probabilities(obs, mask), RuleHeuristicPolicy(catalog).probabilities(obs, mask))
    # an algorithm this code cannot run is refused by name, never replaced by another policy
    unknown = dataclasses.replace(stored, model_version="lgbm-1", algorithm="lightgbm")
    with pytest.raises(RecsysError, match="model lgbm-1 has algorithm 'lightgbm', which this version cannot run"):
        load_policy(unknown, catalog)
    # the schema keeps a rule row free of anything trained
    with pytest.raises(psycopg2.errors.CheckViolation, match="policy_models_rule_heuristic_check"):
        register(db, dataclasses.replace(rule, model_version="rule-with-weights", artifact=b"zip"))
    db.rollback()


def test_act_with_probabilities_is_act_and_probabilities_in_one_pass(toy_model) -> None:
    """The scoring path of a champion that explores with itself: per chunk, the greedy actions of
    `act` and the rows of `probabilities`, bit for bit (with and without an action mapping)."""
    catalog = load_catalog()
    rng = np.random.default_rng(5)
    obs = rng.random((450, N_FEATURES), dtype=np.float32)
    mask = rng.random((450, catalog.n_actions)) < 0.3
    mask[:5] = False
    offers = toy_ppo(catalog.without_rest(), seed=3, timesteps=128)
    for policy in (PPOPolicy(toy_model, catalog), PPOPolicy(offers, catalog, action_ids=np.arange(catalog.n_offers))):
        actions, _ = policy.act(obs, mask)
        probs = policy.probabilities(obs, mask)
        starts = []
        for lo, chunk_actions, chunk_probs in policy.act_with_probabilities(obs, mask, 100):
            starts.append(lo)
            assert np.array_equal(chunk_actions, actions[lo : lo + 100])
            assert np.array_equal(chunk_probs, probs[lo : lo + 100])
        assert starts == [0, 100, 200, 300, 400]
