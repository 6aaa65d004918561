"""The policy protocol every offer policy shares, and the baseline policies to compare against.

A policy maps normalised observations (`recsys.model.observation`) and an allowed-actions mask to a
probability for every catalog action. Everything that uses a policy goes through this protocol:
evaluation against the generator's truth and off-policy estimates (`recsys.evaluation.ope`), the gate,
and the campaign writer (via `choose`). The PPO policy implements it elsewhere (a softmax over
masked logits); the baselines here are plain vectorised numpy:

- `UniformRandomPolicy`: every allowed action equally likely.
- `FixedActionPolicy`: one offer for everybody who can receive it.
- `RuleHeuristicPolicy`: the seed project's rule, "the offer that matches the user's preference".
- `ResponseGreedyPolicy`: the best allowed offer by a response model's expected reward tonight
  (what a retrain's actor first imitates; next to PPO it separates what the policy learned from
  what its model knows).

`OffersOnly` wraps any policy: the same policy conditioned on offering (the rest disallowed), which
is what the gate's one-night checks compare (`recsys.evaluation.gate`).

Baselines read observations only (never the generator's truth), so they run on real data too.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from recsys.config.catalog import Catalog
from recsys.model.observation import FEATURE_NAMES

# Observation columns the rule reads (normalised to [0, 1] like every feature).
_DISCOUNT_SENSITIVITY = FEATURE_NAMES.index("discount_sensitivity")
_FREE_SHIPPING_PREFERENCE = FEATURE_NAMES.index("free_shipping_preference")
_RESPONSIVENESS = {
    "email": FEATURE_NAMES.index("email_responsiveness"),
    "sms": FEATURE_NAMES.index("sms_responsiveness"),
    "push": FEATURE_NAMES.index("push_responsiveness"),
}


@runtime_checkable
class Policy(Protocol):
    """What every offer policy provides: a name and action probabilities for a batch of users."""

    name: str

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """obs float32 (n, N_FEATURES) normalised observations; mask bool (n, n_actions) allowed actions.

        Returns float64 (n, n_actions): the policy's probability of each action, 0 where not
        allowed, rows sum to 1 (a row with no allowed action is all zeros).
        """
        ...


def choose(
    policy: Policy, obs: np.ndarray, mask: np.ndarray, *, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One action per row: greedy (the most probable action, ties to the lowest id) when `rng` is
    None, drawn from the policy's probabilities otherwise.

    Returns (actions int64 (n,), probability float64 (n,)), where probability is the policy's
    probability of the chosen action, `policy.probabilities(obs, mask)[i, action[i]]`: the exact
    propensity of a sampled choice. A greedy choice is deterministic (its logging propensity is 1);
    the value returned for it is still the policy's probability, a measure of its confidence.
    Rows with no allowed action get action -1 and probability 0.
    """
    probs = policy.probabilities(obs, mask)
    if np.shape(probs) != np.shape(mask):
        raise ValueError(
            f"policy {policy.name!r} returned probabilities of shape {np.shape(probs)} for a mask of shape "
            f"{np.shape(mask)}"
        )
    return choose_from_probabilities(probs, rng=rng)


def greedy_actions(
    policy: Policy, obs: np.ndarray, mask: np.ndarray, *, chunk: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    """`choose(policy, obs, mask)` (greedy) for any number of rows, `chunk` rows at a time so the
    whole (n, n_actions) probability matrix never exists at once; a policy with its own `act`
    (PPOPolicy: the argmax on masked logits, batched torch) is asked directly.
    Returns (actions int64 (n,), the policy's probability of each float64 (n,)); -1 / 0 where
    nothing is allowed."""
    act = getattr(policy, "act", None)
    if callable(act):
        return act(obs, mask)
    actions = np.full(len(obs), -1, dtype=np.int64)
    chosen = np.zeros(len(obs), dtype=np.float64)
    for lo in range(0, len(obs), chunk):
        actions[lo : lo + chunk], chosen[lo : lo + chunk] = choose(policy, obs[lo : lo + chunk], mask[lo : lo + chunk])
    return actions, chosen


def choose_from_probabilities(
    probs: np.ndarray, *, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`choose` on probabilities already computed (n, n_actions)."""
    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)
    if rng is None:
        actions = probs.argmax(axis=1) if probs.shape[1] else np.zeros(n, dtype=np.int64)
    else:
        cumulative = np.cumsum(probs, axis=1)
        # 1 - random() lies in (0, 1]: the first action whose cumulative mass reaches the target
        # always has positive probability.
        target = (1.0 - rng.random(n)) * cumulative[:, -1]
        actions = np.minimum((cumulative < target[:, None]).sum(axis=1), probs.shape[1] - 1)
    actions = actions.astype(np.int64)
    empty = ~(probs > 0).any(axis=1)
    chosen = np.where(empty, 0.0, probs[np.arange(n), np.maximum(actions, 0)])
    actions[empty] = -1
    return actions, chosen


def _uniform(mask: np.ndarray) -> np.ndarray:
    """Uniform probabilities over each row's allowed actions (all zeros where none is allowed)."""
    allowed = np.asarray(mask, dtype=np.float64)
    counts = allowed.sum(axis=1, keepdims=True)
    return np.divide(allowed, counts, out=np.zeros_like(allowed), where=counts > 0)


def _check_mask(catalog: Catalog, obs: np.ndarray, mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or mask.shape[1] != catalog.n_actions:
        raise ValueError(f"{name}: mask must have shape (n, {catalog.n_actions}), got {mask.shape}")
    if len(obs) != len(mask):
        raise ValueError(f"{name}: {len(obs)} observations but {len(mask)} mask rows")
    return mask


class UniformRandomPolicy:
    """Every allowed action with the same probability: the floor any learned policy must beat."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.name = "uniform random"

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return _uniform(_check_mask(self.catalog, obs, mask, self.name))


class FixedActionPolicy:
    """The same offer for everybody: `action_id` where it is allowed, uniform over the allowed
    actions where it is not (the protocol needs a distribution on every row with an allowed action).
    """

    def __init__(self, catalog: Catalog, action_id: int) -> None:
        if not 0 <= int(action_id) < catalog.n_actions:
            raise ValueError(f"action_id must be in 0..{catalog.n_actions - 1}, got {action_id}")
        self.catalog = catalog
        self.action_id = int(action_id)
        action = catalog.actions[self.action_id]
        self.name = f"fixed: {action.describe(catalog.value_units.get(action.offer_type, ''))}"

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mask = _check_mask(self.catalog, obs, mask, self.name)
        probs = _uniform(mask)
        allowed = mask[:, self.action_id]
        probs[allowed] = 0.0
        probs[allowed, self.action_id] = 1.0
        return probs


class RuleHeuristicPolicy:
    """The seed project's rule: offer what matches the user's preference, where they read best.

    Offer (from the normalised observation, thresholds on the [0, 1] scale):
      1. discount_sensitivity > 0.5: a discount with the catalog's highest value (15% by default);
      2. else free_shipping_preference > 0.5: free shipping with the lowest minimum order value (5);
      3. else a recommendation showing the catalog value closest to 10 products.
    Channel: of the channels on which that offer is allowed for the user, the one with the highest
    observed responsiveness (ties: catalog channel order). Timing: immediate (the catalog's first
    timing if it has no `immediate`). Deterministic: probability 1 on that action. A row where the
    offer is allowed on no channel (a mask that is not channel-based) is uniform over its allowed
    actions. The catalog must offer discount, free_shipping and recommendation.
    """

    def __init__(self, catalog: Catalog) -> None:
        missing = [t for t in ("discount", "free_shipping", "recommendation") if t not in catalog.offer_types]
        if missing:
            raise ValueError(f"the rule heuristic needs offer types {missing}, which the catalog does not have")
        unknown = [c for c in catalog.channels if c not in _RESPONSIVENESS]
        if unknown:
            raise ValueError(f"the rule heuristic has no responsiveness feature for channels {unknown}")
        self.catalog = catalog
        self.name = "rule heuristic"
        values = np.asarray(catalog.values, dtype=np.float64)
        rule_values = {
            "discount": float(values.max()),
            "free_shipping": float(values.min()),
            "recommendation": float(values[np.argmin(np.abs(values - 10.0))]),
        }
        timing = "immediate" if "immediate" in catalog.timings else catalog.timings[0]
        index = {(a.offer_type, a.value, a.channel, a.timing): a.action_id for a in catalog.actions}
        # (3 offers, n_channels): the action id of each rule offer on each channel.
        self.offers = ("discount", "free_shipping", "recommendation")
        self.candidates = np.array(
            [[index[(t, rule_values[t], c, timing)] for c in catalog.channels] for t in self.offers], dtype=np.int64
        )
        self.responsiveness_columns = np.array([_RESPONSIVENESS[c] for c in catalog.channels], dtype=np.int64)

    def offer_index(self, obs: np.ndarray) -> np.ndarray:
        """Which rule offer each row gets: 0 discount, 1 free shipping, 2 recommendation."""
        obs = np.asarray(obs)
        return np.where(obs[:, _DISCOUNT_SENSITIVITY] > 0.5, 0, np.where(obs[:, _FREE_SHIPPING_PREFERENCE] > 0.5, 1, 2))

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mask = _check_mask(self.catalog, obs, mask, self.name)
        obs = np.asarray(obs)
        n = len(obs)
        rows = np.arange(n)
        candidates = self.candidates[self.offer_index(obs)]  # (n, n_channels)
        allowed = mask[rows[:, None], candidates]
        score = np.where(allowed, obs[:, self.responsiveness_columns].astype(np.float64), -np.inf)
        best = score.argmax(axis=1)
        has_rule = allowed.any(axis=1)
        probs = _uniform(mask)
        probs[has_rule] = 0.0
        probs[rows[has_rule], candidates[rows[has_rule], best[has_rule]]] = 1.0
        return probs


class ResponseGreedyPolicy:
    """Greedy on a response model (`recsys.model.response.ResponseModel`): probability 1 on the allowed
    action with the highest expected reward for one night (ties: the lowest action id); all zeros
    on a row with no allowed action."""

    def __init__(self, catalog: Catalog, response: object, name: str = "greedy on response model") -> None:
        self.catalog = catalog
        self.response = response
        self.name = name

    def actions(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The greedy allowed action per row, -1 where nothing is allowed."""
        mask = _check_mask(self.catalog, obs, mask, self.name)
        rewards = np.where(mask, self.response.reward_matrix(obs), -np.inf)  # type: ignore[attr-defined]
        return np.where(mask.any(axis=1), rewards.argmax(axis=1), -1)

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        best = self.actions(obs, mask)
        probs = np.zeros(np.shape(mask), dtype=np.float64)
        rows = np.flatnonzero(best >= 0)
        probs[rows, best[rows]] = 1.0
        return probs


class OffersOnly:
    """`policy` conditioned on offering: the rest is never allowed, so where the policy would rest
    it takes its best offer (for a softmax policy, its probabilities renormalised over the allowed
    offers). What one night can judge: one night values the rest at exactly 0, below any offer
    with a positive expected value, so the gate compares policies' choices among offers on one
    night and judges their rests over the horizon. On a catalog without the rest it is `policy`.
    """

    def __init__(self, policy: Policy, catalog: Catalog) -> None:
        self.policy = policy
        self.catalog = catalog
        self.name = f"{policy.name} (offers only)"

    def _offers(self, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask, dtype=bool)
        if self.catalog.rest_id is None:
            return mask
        offers = mask.copy()
        offers[:, self.catalog.rest_id] = False
        return offers

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.policy.probabilities(obs, self._offers(mask))

    def act(self, obs: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The greedy allowed offer per row (`greedy_actions` of the wrapped policy without the rest)."""
        return greedy_actions(self.policy, obs, self._offers(mask))
