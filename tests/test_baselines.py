"""Tests of `recsys.model.baselines`: the policy protocol, `choose`, and the baseline policies.

No database: policies are functions of observation and mask arrays.
"""

from __future__ import annotations

import numpy as np
import pytest

from recsys.config.catalog import Catalog, load_catalog
from recsys.model.baselines import (
    FixedActionPolicy,
    Policy,
    ResponseGreedyPolicy,
    RuleHeuristicPolicy,
    UniformRandomPolicy,
    choose,
    choose_from_probabilities,
)
from recsys.model.observation import FEATURE_NAMES, N_FEATURES

CATALOG = load_catalog()
DS = FEATURE_NAMES.index("discount_sensitivity")
FS = FEATURE_NAMES.index("free_shipping_preference")
RESP = {c: FEATURE_NAMES.index(f"{c}_responsiveness") for c in ("email", "sms", "push")}


def channel_mask(catalog: Catalog, channel_ok: np.ndarray) -> np.ndarray:
    """The mask `States.action_mask` builds: an offer is allowed when its channel is, the rest when
    some offer is."""
    index = {"email": 0, "sms": 1, "push": 2}
    offers = channel_ok[:, [index[a.channel] for a in catalog.actions if not a.is_rest]]
    return np.hstack([offers, offers.any(axis=1, keepdims=True)]) if catalog.rest_action else offers


def random_batch(n: int, seed: int, catalog: Catalog = CATALOG) -> tuple[np.ndarray, np.ndarray]:
    """Observations in [0, 1] (float32) and a channel-based mask; every 7th row allows nothing."""
    rng = np.random.default_rng(seed)
    obs = rng.random((n, N_FEATURES)).astype(np.float32)
    channel_ok = rng.random((n, 3)) < 0.6
    channel_ok[::7] = False
    return obs, channel_mask(catalog, channel_ok)


def arbitrary_mask(n: int, seed: int, n_actions: int = CATALOG.n_actions) -> np.ndarray:
    """A mask with no channel structure (allowed actions at random), every 5th row empty."""
    mask = np.random.default_rng(seed).random((n, n_actions)) < 0.1
    mask[::5] = False
    return mask


def all_baselines(catalog: Catalog = CATALOG) -> list[Policy]:
    return [
        UniformRandomPolicy(catalog),
        FixedActionPolicy(catalog, 0),
        FixedActionPolicy(catalog, catalog.n_actions - 1),
        RuleHeuristicPolicy(catalog),
    ]


def reference_rule(obs_row: np.ndarray, channel_ok_row: np.ndarray) -> int | None:
    """The documented rule for one user, written out action by action (default catalog)."""
    if obs_row[DS] > 0.5:
        offer = ("discount", 15.0)
    elif obs_row[FS] > 0.5:
        offer = ("free_shipping", 5.0)
    else:
        offer = ("recommendation", 10.0)
    channels = [c for c, ok in zip(("email", "sms", "push"), channel_ok_row, strict=True) if ok]
    if not channels:
        return None
    best = channels[0]
    for c in ("email", "sms", "push"):  # catalog order; strictly higher responsiveness wins
        if c in channels and obs_row[RESP[c]] > obs_row[RESP[best]]:
            best = c
    (action,) = [
        a.action_id
        for a in CATALOG.actions
        if (a.offer_type, a.value, a.channel, a.timing) == (*offer, best, "immediate")
    ]
    return action


# --- the protocol ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", all_baselines(), ids=lambda p: p.name)
@pytest.mark.parametrize("mask_kind", ["channels", "arbitrary"])
def test_probabilities_respect_the_mask_and_sum_to_one(policy: Policy, mask_kind: str) -> None:
    obs, mask = random_batch(700, seed=1)
    if mask_kind == "arbitrary":
        mask = arbitrary_mask(700, seed=2)
    probs = policy.probabilities(obs, mask)
    assert isinstance(policy, Policy)
    assert probs.dtype == np.float64
    assert probs.shape == mask.shape
    assert (probs >= 0).all()
    assert (probs[~mask] == 0).all()
    sums = probs.sum(axis=1)
    has_any = mask.any(axis=1)
    assert not has_any.all() and has_any.any()
    np.testing.assert_allclose(sums[has_any], 1.0, atol=1e-12)
    assert (sums[~has_any] == 0).all()


@pytest.mark.parametrize("policy", all_baselines(), ids=lambda p: p.name)
def test_policies_refuse_a_mask_of_the_wrong_shape(policy: Policy) -> None:
    obs, mask = random_batch(10, seed=3)
    with pytest.raises(ValueError, match="mask must have shape"):
        policy.probabilities(obs, mask[:, :-1])
    with pytest.raises(ValueError, match="observations but"):
        policy.probabilities(obs[:5], mask)


def test_uniform_random_is_uniform_over_the_allowed_actions() -> None:
    obs, mask = random_batch(300, seed=4)
    probs = UniformRandomPolicy(CATALOG).probabilities(obs, mask)
    counts = mask.sum(axis=1)
    for i in np.flatnonzero(counts):
        np.testing.assert_allclose(probs[i, mask[i]], 1.0 / counts[i])


def test_fixed_action_where_allowed_else_uniform() -> None:
    obs, mask = random_batch(300, seed=5)
    action = 40
    probs = FixedActionPolicy(CATALOG, action).probabilities(obs, mask)
    allowed = mask[:, action]
    assert allowed.any() and (~allowed & mask.any(axis=1)).any()
    assert (probs[allowed, action] == 1.0).all()
    assert (probs[allowed].sum(axis=1) == 1.0).all()
    uniform = UniformRandomPolicy(CATALOG).probabilities(obs, mask)
    np.testing.assert_array_equal(probs[~allowed], uniform[~allowed])


def test_fixed_action_refuses_an_unknown_action() -> None:
    with pytest.raises(ValueError, match=r"action_id must be in 0\.\.108"):
        FixedActionPolicy(CATALOG, 109)  # 108 is the rest
    with pytest.raises(ValueError, match="action_id must be in"):
        FixedActionPolicy(CATALOG, -1)


# --- the rule heuristic -----------------------------------------------------------------------------


def test_rule_heuristic_follows_its_documented_rule() -> None:
    rng = np.random.default_rng(6)
    n = 2_000
    obs = rng.random((n, N_FEATURES)).astype(np.float32)
    channel_ok = rng.random((n, 3)) < 0.6
    channel_ok[::11] = False
    # Ties in responsiveness (new users all have the same prior) and values on the threshold.
    obs[::13, 6:9] = 1 / 3
    obs[::17, DS] = 0.5
    obs[::19, FS] = 0.5
    mask = channel_mask(CATALOG, channel_ok)
    actions, prob = choose(RuleHeuristicPolicy(CATALOG), obs, mask)
    for i in range(n):
        expected = reference_rule(obs[i], channel_ok[i])
        assert actions[i] == (-1 if expected is None else expected), i
        assert prob[i] == (0.0 if expected is None else 1.0)
    chosen = [CATALOG.actions[a] for a in actions[actions >= 0]]
    assert {a.offer_type for a in chosen} == {"discount", "free_shipping", "recommendation"}
    assert {a.timing for a in chosen} == {"immediate"}
    assert {a.channel for a in chosen} == {"email", "sms", "push"}


def test_rule_heuristic_thresholds_are_strict() -> None:
    obs = np.zeros((3, N_FEATURES), dtype=np.float32)
    obs[0, DS] = 0.5  # not above the threshold: next rule
    obs[0, FS] = 0.51
    obs[1, DS] = 0.51
    obs[2, [DS, FS]] = 0.5
    obs[:, RESP["push"]] = 0.9
    mask = np.ones((3, CATALOG.n_actions), dtype=bool)
    actions, _ = choose(RuleHeuristicPolicy(CATALOG), obs, mask)
    got = [(CATALOG.actions[a].offer_type, CATALOG.actions[a].value, CATALOG.actions[a].channel) for a in actions]
    assert got == [("free_shipping", 5.0, "push"), ("discount", 15.0, "push"), ("recommendation", 10.0, "push")]


def test_rule_heuristic_takes_the_next_best_channel_when_the_best_is_not_allowed() -> None:
    obs = np.zeros((1, N_FEATURES), dtype=np.float32)
    obs[0, DS] = 0.9
    obs[0, [RESP["email"], RESP["sms"], RESP["push"]]] = [0.2, 0.9, 0.5]
    actions, _ = choose(RuleHeuristicPolicy(CATALOG), obs, channel_mask(CATALOG, np.array([[True, False, True]])))
    assert CATALOG.actions[actions[0]].channel == "push"


def test_rule_heuristic_is_uniform_where_its_offer_is_not_allowed_anywhere() -> None:
    obs = np.zeros((1, N_FEATURES), dtype=np.float32)
    obs[0, DS] = 0.9
    mask = np.zeros((1, CATALOG.n_actions), dtype=bool)
    mask[0, [a.action_id for a in CATALOG.actions if a.offer_type == "bundle"][:4]] = True
    probs = RuleHeuristicPolicy(CATALOG).probabilities(obs, mask)
    np.testing.assert_allclose(probs[mask], 0.25)


def test_rule_heuristic_on_another_catalog() -> None:
    catalog = Catalog(
        offer_types=("recommendation", "free_shipping", "discount"),
        values=(20.0, 5.0),
        channels=("sms", "push"),
        timings=("delay_1hour", "immediate"),
        value_units={"recommendation": "products_shown", "free_shipping": "min_order_value", "discount": "percent_off"},
        timing_delay_minutes={"delay_1hour": 60, "immediate": 0},
    )
    obs = np.zeros((3, N_FEATURES), dtype=np.float32)
    obs[0, DS] = 0.9
    obs[1, FS] = 0.9
    obs[:, RESP["email"]] = 1.0  # not a catalog channel: ignored
    obs[:, RESP["push"]] = 0.3
    obs[:, RESP["sms"]] = 0.2
    actions, _ = choose(RuleHeuristicPolicy(catalog), obs, np.ones((3, catalog.n_actions), dtype=bool))
    got = [(catalog.actions[a].offer_type, catalog.actions[a].value, catalog.actions[a].channel) for a in actions]
    # discount: the highest value; free shipping: the lowest; recommendation: the closest to 10.
    assert got == [("discount", 20.0, "push"), ("free_shipping", 5.0, "push"), ("recommendation", 5.0, "push")]
    assert {catalog.actions[a].timing for a in actions} == {"immediate"}


def test_rule_heuristic_needs_its_offer_types() -> None:
    catalog = Catalog(
        offer_types=("discount", "bundle"),
        values=(5.0,),
        channels=("email",),
        timings=("immediate",),
        value_units={"discount": "percent_off", "bundle": "percent_off_bundle"},
        timing_delay_minutes={"immediate": 0},
    )
    with pytest.raises(ValueError, match=r"needs offer types \['free_shipping', 'recommendation'\]"):
        RuleHeuristicPolicy(catalog)


# --- choose -----------------------------------------------------------------------------------------


class TablePolicy:
    """A policy whose probabilities are given (the mask is ignored: the table already respects it)."""

    name = "table"

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.probs


def test_choose_greedy_takes_the_most_probable_action() -> None:
    probs = np.array([[0.1, 0.6, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 0.2, 0.8]])
    actions, prob = choose(TablePolicy(probs), np.zeros((4, N_FEATURES)), probs > 0)
    assert actions.dtype == np.int64
    assert actions.tolist() == [1, -1, 0, 3]  # ties: the lowest id
    assert prob.tolist() == [0.6, 0.0, 0.5, 0.8]


def test_choose_sampled_follows_the_probabilities() -> None:
    probs = np.tile(np.array([[0.0, 0.1, 0.0, 0.6, 0.3, 0.0]]), (60_000, 1))
    probs[::10] = 0.0  # rows with no allowed action
    actions, prob = choose(
        TablePolicy(probs), np.zeros((len(probs), N_FEATURES)), probs > 0, rng=np.random.default_rng(7)
    )
    live = probs.sum(axis=1) > 0
    assert (actions[~live] == -1).all() and (prob[~live] == 0).all()
    assert set(np.unique(actions[live]).tolist()) == {1, 3, 4}
    np.testing.assert_array_equal(prob[live], probs[live][np.arange(live.sum()), actions[live]])
    freq = np.bincount(actions[live], minlength=6) / live.sum()
    np.testing.assert_allclose(freq, probs[1], atol=0.01)  # 54k draws: 5 standard errors at most ~0.01
    again, _ = choose(TablePolicy(probs), np.zeros((len(probs), N_FEATURES)), probs > 0, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(actions, again)


def test_choose_sampled_never_picks_a_zero_probability_action() -> None:
    obs, mask = random_batch(5_000, seed=8)
    policy = UniformRandomPolicy(CATALOG)
    actions, prob = choose(policy, obs, mask, rng=np.random.default_rng(9))
    live = mask.any(axis=1)
    assert mask[np.flatnonzero(live), actions[live]].all()
    np.testing.assert_allclose(prob[live], 1.0 / mask[live].sum(axis=1))
    # Sampling a uniform policy reaches many actions; greedy always takes the first allowed one.
    assert len(np.unique(actions[live])) == CATALOG.n_actions
    greedy, _ = choose(policy, obs, mask)
    np.testing.assert_array_equal(greedy[live], mask[live].argmax(axis=1))


def test_choose_refuses_probabilities_of_the_wrong_shape() -> None:
    probs = np.full((3, 4), 0.25)
    with pytest.raises(ValueError, match="returned probabilities of shape"):
        choose(TablePolicy(probs), np.zeros((3, N_FEATURES)), np.ones((3, 5), dtype=bool))


def test_choose_from_probabilities_on_an_empty_batch() -> None:
    actions, prob = choose_from_probabilities(np.zeros((0, 6)), rng=np.random.default_rng(0))
    assert actions.shape == (0,) and prob.shape == (0,)


def test_response_greedy_takes_the_models_best_allowed_offer() -> None:
    from recsys.config.reward import load_reward_rules
    from recsys.model.response import prior_response_model

    model = prior_response_model(CATALOG, load_reward_rules())
    obs, mask = random_batch(300, seed=4)
    policy = ResponseGreedyPolicy(CATALOG, model)
    probs = policy.probabilities(obs, mask)
    rewards = model.reward_matrix(obs)
    has = mask.any(axis=1)
    assert np.array_equal(probs.sum(axis=1), has.astype(float))  # one action per row that can receive one
    best = probs.argmax(axis=1)
    assert mask[has, best[has]].all()
    # no allowed action has a higher expected reward than the chosen one
    chosen = rewards[np.arange(len(obs)), best]
    assert (np.where(mask, rewards, -np.inf)[has] <= chosen[has, None]).all()
    assert np.array_equal(policy.actions(obs, mask)[~has], np.full(int((~has).sum()), -1))
