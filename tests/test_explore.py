"""The softmax explorer: exact propensities, support, determinism, its source in the registry, config."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from recsys.benchmark.toy import plausible_observations, toy_ppo_artifact, toy_record
from recsys.campaign import load_rules
from recsys.campaign.decide import decide, decide_observed
from recsys.campaign.explore import (
    Explorer,
    choose_explored,
    choose_self_explored,
    exploration_probability,
    exploration_source,
    softmax_exploration,
)
from recsys.campaign.score import choose_actions
from recsys.config.catalog import DEFAULT_CONFIG, load_catalog
from recsys.db import Connection
from recsys.errors import ConfigError
from recsys.evaluation.registry import record_decision, register, rule_heuristic_record
from recsys.model.observation import N_FEATURES

DAY = dt.date(2026, 6, 10)
N_ACTIONS = 12


class FixedPreferences:
    """A test policy: probabilities proportional to exp(`scores`) on each row's allowed actions."""

    name = "fixed preferences"

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = np.asarray(scores, dtype=np.float64)

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = np.where(mask, np.exp(self.scores), 0.0)
        total = w.sum(axis=1, keepdims=True)
        return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


SCORES = np.linspace(2.0, -3.0, N_ACTIONS)


def _explorer(temperature: float = 1.0, floor: float = 0.1) -> Explorer:
    return Explorer("softmax", temperature, floor, FixedPreferences(SCORES), "test")


def _rules(eps: float = 0.3):
    return dataclasses.replace(load_rules(), exploration_share=eps)


def _mixture(greedy: np.ndarray, q: np.ndarray, eps: float) -> np.ndarray:
    return (1 - eps) * np.eye(q.shape[1])[greedy] + eps * q


def test_exploration_distribution_is_a_distribution_on_the_allowed_actions() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((500, N_ACTIONS)) < 0.4
    mask[:3] = False  # nothing allowed: all zeros
    p = FixedPreferences(SCORES).probabilities(np.zeros((500, N_FEATURES)), mask)
    q = softmax_exploration(p, mask, temperature=1.0, floor=0.1)
    has = mask.any(axis=1)
    assert np.allclose(q.sum(axis=1), has.astype(float))
    assert not (q[~mask] > 0).any() and (q[mask] > 0).all()  # the floor keeps every allowed action
    uniform = mask / np.maximum(mask.sum(axis=1, keepdims=True), 1)
    assert np.allclose(q, 0.9 * p + 0.1 * uniform)  # temperature 1: the policy itself, plus the floor
    flat = softmax_exploration(p, mask, temperature=1e6, floor=0.1)
    assert np.allclose(flat, uniform, atol=1e-5)  # a high temperature flattens to uniform
    sharp = softmax_exploration(p, mask, temperature=0.5, floor=0.1)
    assert np.allclose(sharp.sum(axis=1), has.astype(float))
    # a policy with no mass on the allowed actions (underflow) explores uniformly
    assert np.allclose(softmax_exploration(np.zeros_like(p), mask, temperature=1.0, floor=0.1), uniform)


@pytest.mark.parametrize("temperature", [1.0, 0.3, 2.5])
def test_the_probability_of_one_action_equals_the_whole_distribution(temperature: float) -> None:
    """What scoring computes for every offered user (q of one action) is q of the full matrix."""
    rng = np.random.default_rng(4)
    mask = rng.random((400, N_ACTIONS)) < 0.5
    mask[:2] = False
    p = FixedPreferences(SCORES * 3).probabilities(np.zeros((400, N_FEATURES)), mask)
    q = softmax_exploration(p, mask, temperature=temperature, floor=0.2)
    assert np.allclose(q.sum(axis=1)[2:], 1.0)
    actions = rng.integers(0, N_ACTIONS, 400)
    one = exploration_probability(p, mask, actions, temperature=temperature, floor=0.2)
    assert np.allclose(one, q[np.arange(400), actions])  # 0 where the action is not allowed
    assert (one[~mask[np.arange(400), actions]] == 0).all()
    assert (exploration_probability(p, mask, np.full(400, -1), temperature=temperature, floor=0.2) == 0).all()


def test_propensities_are_exact_and_match_the_draw_frequencies() -> None:
    """Same context for every user: the logged propensity of each action equals the mixture
    (1 - eps) [greedy] + eps q, and the frequencies over 100,000 users match it."""
    n, eps = 100_000, 0.3
    mask = np.ones((n, N_ACTIONS), bool)
    mask[:, [3, 8]] = False
    greedy = np.full(n, 5)  # not the explorer's favourite: the champion and the challenger disagree
    rules = _rules(eps)
    action, propensity, explored = choose_explored(
        greedy, np.zeros((n, N_FEATURES)), mask, np.arange(n), DAY, rules, _explorer()
    )
    assert mask[np.arange(n), action].all()  # never a masked action
    p = FixedPreferences(SCORES).probabilities(np.zeros((1, N_FEATURES)), mask[:1])
    q = softmax_exploration(p, mask[:1], temperature=1.0, floor=0.1)[0]
    mixture = _mixture(np.array([5]), q[None, :], eps)[0]
    assert np.isclose(mixture.sum(), 1.0)
    assert np.allclose(propensity, mixture[action])
    freq = np.bincount(action, minlength=N_ACTIONS) / n
    assert np.all(np.abs(freq - mixture) < 4 * np.sqrt(mixture * (1 - mixture) / n) + 1e-12)
    assert abs(explored.mean() - eps) < 0.01
    # among the explored users alone the frequencies are q's
    explored_freq = np.bincount(action[explored], minlength=N_ACTIONS) / explored.sum()
    assert np.all(np.abs(explored_freq - q) < 0.01)
    assert (action[~explored] == 5).all()


def test_draws_are_deterministic_per_user_and_date() -> None:
    n = 20_000
    rng = np.random.default_rng(1)
    mask = rng.random((n, N_ACTIONS)) < 0.5
    mask[:, 0] = True
    greedy = np.zeros(n, dtype=np.int64)
    ids = np.arange(1_000, 1_000 + n)
    obs = np.zeros((n, N_FEATURES))
    rules, explorer = _rules(), _explorer()
    first = choose_explored(greedy, obs, mask, ids, DAY, rules, explorer)
    again = choose_explored(greedy, obs, mask, ids, DAY, rules, explorer)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    # a user's draw does not depend on who else is scored with them (shards, order)
    order = rng.permutation(n)
    shuffled = choose_explored(greedy[order], obs[order], mask[order], ids[order], DAY, rules, explorer)
    assert all(np.array_equal(a[order], b) for a, b in zip(first, shuffled, strict=True))
    # another date draws again
    other = choose_explored(greedy, obs, mask, ids, DAY + dt.timedelta(days=1), rules, explorer)
    assert not np.array_equal(first[2], other[2])
    # the same users are explored under either explorer (the same hashes)
    uniform = choose_actions(greedy, mask, ids, DAY, rules)
    assert np.array_equal(uniform[2], first[2])


def test_a_ppo_explorer_keeps_the_protocol_on_plausible_users() -> None:
    """A real (toy) PPO network as the source: every user's mixture sums to one, no masked action."""
    from recsys.model.policy import PPOPolicy, load_sb3_model

    catalog = load_catalog()
    policy = PPOPolicy(load_sb3_model(toy_ppo_artifact(catalog, seed=3)), catalog)
    n, eps = 3_000, 0.5
    obs = plausible_observations(n, seed=2)
    rng = np.random.default_rng(2)
    mask = rng.random((n, catalog.n_actions)) < 0.3
    mask[:, 0] = True
    greedy, _ = policy.act(obs, mask)
    explorer = Explorer("softmax", 2.0, 0.05, policy, "toy")
    action, propensity, explored = choose_explored(greedy, obs, mask, np.arange(n), DAY, _rules(eps), explorer)
    q = softmax_exploration(policy.probabilities(obs, mask), mask, temperature=2.0, floor=0.05)
    mixture = _mixture(greedy, q, eps)
    assert np.allclose(mixture.sum(axis=1), 1.0)
    assert mask[np.arange(n), action].all()
    assert np.allclose(propensity, mixture[np.arange(n), action])
    assert (propensity > 0).all() and (action[explored] != greedy[explored]).any()


def _same(a: np.ndarray, b: np.ndarray) -> None:
    """Equal: actions and flags exactly; probabilities up to float32 rounding (the one pass runs
    the network on other batches than `act` does: equal bits where, as with MKL, a row's result
    does not depend on its batch, which is what scoring 200k users before and after measured)."""
    if a.dtype.kind == "f":
        assert np.allclose(a, b, rtol=0.0, atol=1e-6)
    else:
        assert np.array_equal(a, b)


def test_a_champion_exploring_with_itself_decides_as_with_two_passes() -> None:
    """One forward pass for the greedy action and the explorer's probabilities (the champion is
    its own explorer) gives the same actions, propensities and draws as two passes, with the rest
    and with a model that knows only the offers (an action mapping)."""
    from recsys.model.policy import PPOPolicy, load_sb3_model

    catalog = load_catalog()
    n = 40_000  # more than two of the explorer's chunks, the last one partial
    obs = plausible_observations(n, seed=4)
    rng = np.random.default_rng(4)
    mask = rng.random((n, catalog.n_actions)) < 0.3
    mask[:, -1] = mask[:, :-1].any(axis=1)
    mask[:5] = False  # nothing allowed: -1, never explored
    ids = np.arange(10, 10 + n)
    rules = _rules(0.2)
    offers_only = load_sb3_model(toy_ppo_artifact(catalog.without_rest(), seed=6))
    for policy in (
        PPOPolicy(load_sb3_model(toy_ppo_artifact(catalog, seed=5)), catalog),
        PPOPolicy(offers_only, catalog, action_ids=np.arange(catalog.n_offers)),
    ):
        explorer = Explorer("softmax", 1.0, 0.1, policy, "toy")
        greedy, _ = policy.act(obs, mask)
        two_passes = choose_explored(greedy, obs, mask, ids, DAY, rules, explorer)
        one_pass = choose_self_explored(obs, mask, ids, DAY, rules, explorer)
        _same(one_pass[0], greedy)
        for a, b in zip(two_passes, one_pass[1:], strict=True):
            _same(a, b)
        # decide_observed takes the one pass exactly when the explorer's policy is the champion
        shared = decide_observed(policy, obs, mask, ids, DAY, rules, explorer)
        other = PPOPolicy(policy.model, catalog, action_ids=policy.action_ids)  # equal, not the same object
        apart = decide_observed(other, obs, mask, ids, DAY, rules, explorer)
        for a, b in zip(shared, apart, strict=True):
            _same(a, b)
        assert (one_pass[1][:5] == -1).all() and not one_pass[3][:5].any()


# --- the source in the registry --------------------------------------------------------------------


def _fresh(conn: Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("truncate recsys.policy_models cascade")
    conn.commit()


def test_the_source_is_the_newest_challenger_else_a_ppo_champion_else_uniform(db: Connection) -> None:
    catalog = load_catalog()
    rules = load_rules()
    _fresh(db)
    assert exploration_source(db, catalog, rules) is None  # an empty registry: uniform
    rule = rule_heuristic_record(catalog, as_of=DAY, response_model={})
    register(db, rule)
    record_decision(db, rule.model_version, decision="bootstrap", reasons=[], evaluation={})
    db.commit()
    assert exploration_source(db, catalog, rules) is None  # the rule alone: nothing to soften
    artifact = toy_ppo_artifact(catalog, seed=4)
    register(db, toy_record(catalog, "ppo-1", artifact, seed=4, trained_on=DAY, total_timesteps=64))
    db.commit()
    assert exploration_source(db, catalog, rules).model_version == "ppo-1"  # the challenger
    register(db, toy_record(catalog, "ppo-2", artifact, seed=4, trained_on=DAY, total_timesteps=64))
    db.commit()
    assert exploration_source(db, catalog, rules).model_version == "ppo-2"  # the newest one
    record_decision(db, "ppo-2", decision="promoted", reasons=[], evaluation={})
    db.commit()
    # the newest PPO is the champion now: the champion's own probabilities
    assert exploration_source(db, catalog, rules).model_version == "ppo-2"
    uniform = dataclasses.replace(rules, explorer="uniform")
    assert exploration_source(db, catalog, uniform) is None
    assert exploration_source(db, catalog, dataclasses.replace(rules, exploration_share=0.0)) is None
    _fresh(db)


# --- configuration -----------------------------------------------------------------------------------


def test_default_explorer_settings() -> None:
    rules = load_rules()
    assert (rules.explorer, rules.exploration_temperature, rules.exploration_floor) == ("softmax", 1.0, 0.1)
    assert rules.as_json()["explorer"] == "softmax"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ('explorer = "thompson"', r"\[campaign\] explorer must be one of 'uniform', 'softmax', got 'thompson'"),
        ("exploration_temperature = 0", r"\[campaign\] exploration_temperature must be a number > 0, got 0"),
        ("exploration_temperature = inf", r"\[campaign\] exploration_temperature must be a number > 0"),
        ('exploration_temperature = "1"', r"\[campaign\] exploration_temperature must be a number > 0"),
        ("exploration_floor = 0.0", r"\[campaign\] exploration_floor must be a number in \(0, 1\], got 0.0"),
        ("exploration_floor = 1.5", r"\[campaign\] exploration_floor must be a number in \(0, 1\], got 1.5"),
        ("exploration_top_k = 5", r"\[campaign\] has unknown keys \['exploration_top_k'\]"),
    ],
)
def test_invalid_explorer_settings_name_the_key(tmp_path: Path, edit: str, message: str) -> None:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    head, _, _ = text.partition("[campaign]")
    path = tmp_path / "config.toml"
    path.write_text(head + "[campaign]\n" + edit + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        load_rules(path)
    assert str(path) in str(info.value)


def test_the_uniform_explorer_reproduces_the_original_draws(tmp_path: Path) -> None:
    """`explorer = "uniform"` loads, and `decide` with it draws the original uniform mixture, even
    with a challenger at hand; so does the softmax explorer without a source policy."""
    path = tmp_path / "config.toml"
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    path.write_text(text.replace('explorer = "softmax"', 'explorer = "uniform"'), encoding="utf-8")
    rules = dataclasses.replace(load_rules(path), exploration_share=0.3, holdout_share=0.0)
    assert rules.explorer == "uniform"
    n = 5_000
    rng = np.random.default_rng(3)
    mask = rng.random((n, N_ACTIONS)) < 0.5
    mask[:, 1] = True
    ids = np.arange(n)
    champion = FixedPreferences(-SCORES)
    raw = np.zeros((n, N_FEATURES))
    greedy = champion.probabilities(raw, mask).argmax(axis=1)
    original = choose_actions(greedy, mask, ids, DAY, rules)
    with_challenger = Explorer("uniform", 1.0, 0.1, FixedPreferences(SCORES), "test")
    for explorer in (None, with_challenger, Explorer("softmax", 1.0, 0.1, None, "uniform")):
        action, propensity, explored, held = decide(champion, raw, mask, ids, DAY, rules, explorer)
        assert np.array_equal(action, original[0]) and np.allclose(propensity, original[1])
        assert np.array_equal(explored, original[2]) and not held.any()
    softmax = decide(champion, raw, mask, ids, DAY, dataclasses.replace(rules, explorer="softmax"), _explorer())
    assert np.array_equal(softmax[2], original[2]) and not np.array_equal(softmax[0], original[0])
