"""The benchmark's peers (`recsys.benchmark.peers`) on a tiny synthetic shop whose truth is known.

Logged offers are drawn uniformly over each user's allowed actions; the chance to click rises with
the user's discount sensitivity for discounts and with the free-shipping preference for free
shipping. Every peer must choose allowed actions only and be worth more than uniform random under
that truth. lightgbm and vowpalwabbit are bench requirements (bench/requirements-bench.txt), not
product ones: without them these tests skip.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.benchmark.peers import DIRECT_ROW, FUNNEL_ROW, VW_ROW, PeerConfig, fit_peers, missing_packages
from recsys.config import load_config
from recsys.data.logged_offers import OfferLog
from recsys.model.baselines import choose
from recsys.model.observation import FEATURE_NAMES, N_FEATURES

pytestmark = pytest.mark.skipif(
    bool(missing_packages()),
    reason=f"bench packages not installed: {missing_packages()} (bench/requirements-bench.txt)",
)

CONFIG = load_config()
# as in the policy benchmark: the seed's offers, without the rest action
CATALOG = CONFIG.catalog.without_rest()
RULES = CONFIG.reward
DISCOUNT = FEATURE_NAMES.index("discount_sensitivity")
FREE_SHIPPING = FEATURE_NAMES.index("free_shipping_preference")
ORDER_VALUE = 50.0


def truth(obs: np.ndarray) -> dict[str, np.ndarray]:
    """Stage probabilities (n, n_actions) and the expected net value of every action."""
    kind = np.array([a.offer_type for a in CATALOG.actions])
    email = np.array([a.channel == "email" for a in CATALOG.actions])
    logit = -1.5 + 5.0 * (
        (kind == "discount") * (obs[:, [DISCOUNT]] - 0.5) + (kind == "free_shipping") * (obs[:, [FREE_SHIPPING]] - 0.5)
    )
    p_open = np.broadcast_to(np.where(email, 0.5, 0.3), logit.shape)
    p_click = 1.0 / (1.0 + np.exp(-logit))
    p_convert = np.full(logit.shape, 0.4)
    percent = np.array(
        [a.value / 100 if RULES.offer_cost[a.offer_type].rule == "percent_of_order" else 0.0 for a in CATALOG.actions]
    )
    fee = np.array([RULES.offer_cost[a.offer_type].fee for a in CATALOG.actions])
    contact = np.array([RULES.contact_cost[a.channel] for a in CATALOG.actions])
    value = p_open * p_click * p_convert * (ORDER_VALUE * (RULES.margin_rate - percent) - fee) - contact
    return {"open": p_open, "click": p_click, "convert": p_convert, "value": value, "percent": percent}


def users(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Observations in [0, 1] and masks: each channel allowed with probability 0.7, at least one."""
    obs = rng.random((n, N_FEATURES)).astype(np.float32)
    channels = rng.random((n, len(CATALOG.channels))) < 0.7
    channels[~channels.any(axis=1), 0] = True
    cols = np.array([CATALOG.channels.index(a.channel) for a in CATALOG.actions])
    return obs, channels[:, cols]


def logged_offers(seed: int, n_users: int = 1500, per_user: int = 8) -> OfferLog:
    """Offers drawn uniformly over the allowed actions, outcomes drawn from `truth`."""
    rng = np.random.default_rng(seed)
    obs, mask = users(rng, n_users)
    user = np.repeat(np.arange(1, n_users + 1), per_user)
    obs, mask = obs[user - 1], mask[user - 1]
    n = len(user)
    keys = np.where(mask, rng.random(mask.shape), -1.0)
    action = keys.argmax(axis=1)
    t = truth(obs)
    rows = np.arange(n)
    opened = rng.random(n) < t["open"][rows, action]
    clicked = opened & (rng.random(n) < t["click"][rows, action])
    converted = clicked & (rng.random(n) < t["convert"][rows, action])
    actions = [CATALOG.actions[a] for a in action]
    frame = pd.DataFrame(
        {
            "user_id": user,
            "has_features": True,
            "offer_type": [a.offer_type for a in actions],
            "offer_value": [float(a.value) for a in actions],
            "channel": [a.channel for a in actions],
            "timing": [a.timing for a in actions],
            "opened": pd.array(opened, dtype="boolean"),
            "clicked": pd.array(clicked, dtype="boolean"),
            "converted": pd.array(converted, dtype="boolean"),
            "revenue": np.where(converted, ORDER_VALUE * (1.0 - t["percent"][action]), 0.0),
        }
    )
    return OfferLog(
        rows=frame, obs=obs, mask=mask, action_ids=action.astype(np.int64), propensity=1.0 / mask.sum(axis=1)
    )


@pytest.fixture(scope="module")
def peers():
    config = PeerConfig(lgbm_max_rounds=200, vw_grid=("-l 0.5 -q UA",), lgbm_grid=((7, 50), (15, 200)))
    return fit_peers(logged_offers(seed=1), CATALOG, RULES, config)


def test_every_peer_chooses_allowed_actions_and_beats_uniform_random(peers) -> None:
    assert set(peers.policies) == {DIRECT_ROW, FUNNEL_ROW, VW_ROW}
    assert peers.skipped == {}
    obs, mask = users(np.random.default_rng(7), 800)
    mask[:5] = False  # nobody reachable: no action
    values = truth(obs)["value"]
    n_allowed = np.maximum(mask.sum(axis=1), 1)
    random_value = (np.where(mask, values, 0.0).sum(axis=1) / n_allowed).mean()
    for name, policy in peers.policies.items():
        actions, _ = choose(policy, obs, mask)
        assert (actions[:5] == -1).all(), name
        sent = actions[5:]
        assert mask[np.arange(5, len(obs)), sent].all(), name
        value = np.where(actions >= 0, values[np.arange(len(obs)), np.maximum(actions, 0)], 0.0).mean()
        assert value > random_value, (name, value, random_value)


def test_the_chosen_hyper_parameters_come_from_the_grid(peers) -> None:
    direct = peers.choices[DIRECT_ROW]["reward"]
    assert (direct["num_leaves"], direct["min_data_in_leaf"]) in ((7, 50), (15, 200))
    assert 1 <= direct["rounds"] <= 200
    funnel = peers.choices[FUNNEL_ROW]
    assert all(isinstance(funnel[s], dict) for s in ("open", "click", "convert", "order_value"))
    assert funnel["unsubscribe"] == "the reward rules' prior"  # these logs record no unsubscribes
    assert peers.choices[VW_ROW]["cost"]["options"] == "-l 0.5 -q UA"
