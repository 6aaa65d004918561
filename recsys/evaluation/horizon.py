"""Policies valued over the horizon in the simulator: what judges a policy's rests.

One night values the rest at exactly 0, below any offer with a positive expected value, so it can
only say a rest is a loss; its gain comes later (less fatigue, fewer unsubscribes, a user who
answers the next offer). `horizon_values` follows a sample of tonight's users for `nights` nights
in the response model's simulator (`recsys.model.env.OfferDynamics`, expected rewards, outcomes
sampled) under each policy's greedy choices (drawn from its probabilities for the policies named
in `drawn`, such as uniform random), with common random numbers: every policy meets the
same users with the same draws, so their paired differences carry only what the policies did
differently. The value is the mean reward per user-night (undiscounted), with a percentile
bootstrap interval over users, paired for the differences (`recsys.evaluation.estimators`).

Called by `recsys.evaluation.challenger.evaluate_challenger` (the gate's horizon checks).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from recsys.config.catalog import Catalog
from recsys.evaluation.estimators import bootstrap_estimates
from recsys.evaluation.results import HorizonEvaluation, HorizonValue
from recsys.model.baselines import Policy, choose, greedy_actions
from recsys.model.contact_rules import ContactRules
from recsys.model.env import DRAWS_PER_NIGHT, OfferDynamics
from recsys.model.observation import States
from recsys.model.response import ResponseModel


def horizon_values(
    policies: Mapping[str, Policy],
    pairs: Mapping[str, tuple[str, str]],
    *,
    states: States,
    response: ResponseModel,
    catalog: Catalog,
    nights: int,
    max_users: int,
    seed: int = 0,
    n_boot: int = 200,
    alpha: float = 0.05,
    drawn: Collection[str] = (),
    rules: ContactRules | None = None,
) -> HorizonEvaluation:
    """Each policy's greedy choices over `nights` nights on the same sample of at most `max_users`
    of tonight's users (uniform, by `seed`), and for each name of `pairs` the paired difference
    first - second. Values are mean reward per user-night; `rest_share` is the share of user-nights
    (with some action allowed) on which the policy rested. The policies named in `drawn` act by a
    draw from their probabilities (a generator of `seed`), the others greedily. `rules`: the
    campaign's contact rules, applied every night (a user they block is skipped that night)."""
    rng = np.random.default_rng(seed)
    n = len(states)
    rows = np.arange(n) if n <= max_users else np.sort(rng.choice(n, max_users, replace=False))
    # one set of uniform numbers replayed under every policy: common random numbers
    draws = rng.random((len(rows), 1 + nights * DRAWS_PER_NIGHT))
    per_user: dict[str, np.ndarray] = {}
    rest_share: dict[str, float] = {}
    for name, policy in policies.items():
        core = OfferDynamics(
            response,
            states.obs[rows],
            states.channel_ok[rows],
            n=len(rows),
            horizon=nights,
            reward_mode="expected",
            rules=rules,
        )
        core.reset(np.arange(len(rows)), list(range(len(rows))), draws=draws)
        if name in drawn:
            generator = np.random.default_rng([seed, 1])
            reward, chosen = core.rollout(lambda obs, mask, p=policy, g=generator: choose(p, obs, mask, rng=g)[0])
        else:
            reward, chosen = core.rollout(lambda obs, mask, p=policy: greedy_actions(p, obs, mask)[0])
        per_user[name] = reward.mean(axis=1)
        decided = chosen >= 0
        rested = catalog.is_rest(chosen) & decided
        rest_share[name] = float(rested.sum() / decided.sum()) if decided.any() else 0.0
    specs = {name: (values, None, float(len(values))) for name, values in per_user.items()}
    specs |= {f"{a}-{b}": (per_user[a] - per_user[b], None, float(len(rows))) for a, b in pairs.values()}
    estimates = bootstrap_estimates(specs, n_boot=n_boot, seed=seed, alpha=alpha) if len(rows) else {}

    def value(key: str) -> HorizonValue:
        e = estimates.get(key)
        return HorizonValue(0.0, 0.0, 0.0) if e is None else HorizonValue(e.value, e.lower, e.upper)

    return HorizonEvaluation(
        nights=nights,
        users=len(rows),
        values={name: value(name) for name in policies},
        differences={name: value(f"{a}-{b}") for name, (a, b) in pairs.items()},
        rest_share=rest_share,
    )


__all__ = ["horizon_values"]
