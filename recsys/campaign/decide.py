"""Campaign decisions in numpy: who may get what, why the others get nothing, and what each gets.

`allowed_mask` (consent with an address, frequency caps, cooldown), `skip_reasons`, the uniform
exploration mixture with exact propensities (`choose_actions`; the softmax explorer is
`recsys.campaign.explore`) and `decide` / `decide_observed` (on raw features / on observations),
which add the policy's greedy action on masked logits and the holdout. Called by `score_campaign`
(recsys.campaign.score).
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from recsys.campaign import hashing
from recsys.campaign.explore import Explorer, choose_explored, choose_self_explored, explore_draws
from recsys.campaign.load import Users
from recsys.config.catalog import Catalog
from recsys.config.rules import CampaignRules
from recsys.model.baselines import Policy, greedy_actions
from recsys.model.observation import normalise

CHANNELS = ("email", "sms", "push")
SKIP_REASONS = ("no_consent", "inactive", "cooldown", "frequency_cap")


def allowed_mask(users: Users, catalog: Catalog, rules: CampaignRules) -> tuple[np.ndarray, np.ndarray]:
    """(channel_ok (n, 3), action mask (n, n_actions)): consent with an address, caps, cooldown.
    The rest is allowed wherever some offer is: a user the hard rules skip is skipped, never rested."""
    n = len(users)
    channel_ok = np.stack([users[f"ok_{ch}"] > 0 for ch in CHANNELS], axis=1)
    capped = users["n_total"] >= rules.cap_total
    per_channel = np.zeros((n, 3), bool)
    for j, ch in enumerate(CHANNELS):
        if ch in rules.cap_per_channel:
            per_channel[:, j] = users[f"n_{ch}"] >= rules.cap_per_channel[ch]
    cool = users["cooldown"] > 0 if rules.cooldown_days > 0 else np.zeros(n, bool)
    active = users["active"] > 0
    usable = channel_ok & ~per_channel & (active & ~capped & ~cool)[:, None]
    return channel_ok, catalog.action_mask(usable)


def skip_reasons(users: Users, channel_ok: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per user the first reason they get nothing ('' when eligible), in SKIP_REASONS order."""
    reason = np.full(len(users), "", dtype=object)
    has_mask = mask.any(axis=1)
    checks = (
        ("no_consent", ~channel_ok.any(axis=1)),
        ("inactive", users["active"] == 0),
        ("cooldown", users["cooldown"] > 0),
        ("frequency_cap", ~has_mask),  # the total cap, or every reachable channel at its own cap
    )
    for name, hit in checks:
        reason[(reason == "") & hit & ~has_mask] = name
    return reason


def choose_actions(
    greedy: np.ndarray, mask: np.ndarray, user_ids: np.ndarray, campaign_date: dt.date, rules: CampaignRules
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The uniform exploration mixture: (action, propensity, is_exploration) per user with an allowed action.

    With eps = exploration_share and A the allowed set: an explored user's action is uniform on A;
    P(greedy) = (1 - eps) + eps / |A|, P(other allowed a) = eps / |A| (exact under the hash draws).
    """
    eps = rules.exploration_share
    n_allowed = mask.sum(axis=1)
    explore, draws = explore_draws(user_ids, campaign_date, rules)
    action = greedy.copy()
    rows = np.flatnonzero(explore & (n_allowed > 0))
    if len(rows):
        draw = draws[rows]
        k = np.minimum((draw * n_allowed[rows]).astype(np.int64), n_allowed[rows] - 1)
        position = np.cumsum(mask[rows], axis=1, dtype=np.int32)  # position (1-based) among allowed
        action[rows] = np.argmax(position > k[:, None], axis=1)
    share = eps / np.maximum(n_allowed, 1)
    propensity = np.where(action == greedy, (1.0 - eps) + share, share)
    return action, propensity, explore


def decide(
    policy: Policy,
    raw: np.ndarray,
    mask: np.ndarray,
    ids: np.ndarray,
    campaign_date: dt.date,
    rules: CampaignRules,
    explorer: Explorer | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`decide_observed` on raw feature columns (n, N_FEATURES), normalised first."""
    return decide_observed(policy, normalise(raw), mask, ids, campaign_date, rules, explorer)


def decide_observed(
    policy: Policy,
    obs: np.ndarray,
    mask: np.ndarray,
    ids: np.ndarray,
    campaign_date: dt.date,
    rules: CampaignRules,
    explorer: Explorer | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(action, propensity, is_exploration, is_holdout) per eligible user, from their observations
    (float32, normalised): the policy's greedy action (any `Policy`: PPO's argmax on masked logits,
    the rule heuristic's offer), the exploration mixture (`explorer`; None or one without a policy:
    uniform), and the holdout (greedy action logged, never sent). An explorer whose policy is
    `policy` itself shares its forward pass (`choose_self_explored`)."""
    holdout = hashing.uniform(ids, rules.holdout_salt, "holdout") < rules.holdout_share
    if explorer is None or explorer.is_uniform:
        greedy, _ = greedy_actions(policy, obs, mask)
        action, propensity, explore = choose_actions(greedy, mask, ids, campaign_date, rules)
    elif explorer.policy is policy and callable(getattr(policy, "act_with_probabilities", None)):
        greedy, action, propensity, explore = choose_self_explored(obs, mask, ids, campaign_date, rules, explorer)
    else:
        greedy, _ = greedy_actions(policy, obs, mask)
        action, propensity, explore = choose_explored(greedy, obs, mask, ids, campaign_date, rules, explorer)
    action = np.where(holdout, greedy, action)
    explore &= ~holdout
    propensity = np.where(holdout, 1.0, propensity)
    return action, propensity, explore, holdout
