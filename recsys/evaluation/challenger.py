"""A challenger's evaluation at training time: its greedy value in the simulator (the night's users
under the response model it trained with) next to uniform random and the champion, and, once offers
are logged, doubly robust estimates on the logs, paired on the same rows and resamples with the
champion's and with the conservative baseline's (the rule heuristic).

With the rest in the catalog, those one-night values are of the policies conditioned on offering
(`recsys.model.baselines.OffersOnly`: where a policy rests, its best offer): one night can only
rank the rest below any offer worth something, so it judges the choice among offers. The rests
are judged over the horizon: the challenger with its rests, the same challenger always offering,
the champion and uniform random followed over `GateConfig.horizon_nights` nights in the simulator
(`recsys.evaluation.horizon`), with paired intervals.
The gate (`recsys.evaluation.gate`) judges what this returns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recsys.config.catalog import Catalog
from recsys.db import Connection
from recsys.errors import RecsysError
from recsys.evaluation.registry import ModelRecord, load_policy
from recsys.evaluation.results import ChallengerEvaluation, ChampionEvaluation, HorizonEvaluation, OffPolicyValue
from recsys.model.baselines import OffersOnly, Policy
from recsys.model.observation import States
from recsys.model.response import ResponseModel

if TYPE_CHECKING:
    from recsys.model.contact_rules import ContactRules


def simulator_values(policy: Policy, states: States, response: ResponseModel, catalog: Catalog) -> tuple[float, float]:
    """Mean expected reward per user of the policy's greedy action, and of uniform random, under the
    response model (one night, today's states). With the rest in the catalog, random is uniform
    over the offers: one night judges the choice among offers."""
    from recsys.model.baselines import UniformRandomPolicy, choose

    if len(states) == 0:
        return 0.0, 0.0
    mask = states.action_mask(catalog)
    rewards = response.reward_matrix(states.obs)
    actions, _ = choose(policy, states.obs, mask)
    has = actions >= 0
    chosen = np.where(has, rewards[np.arange(len(actions)), np.maximum(actions, 0)], 0.0)
    random_probs = OffersOnly(UniformRandomPolicy(catalog), catalog).probabilities(states.obs, mask)
    return float(chosen.mean()), float((random_probs * rewards).sum(axis=1).mean())


def _scores_on(record: ModelRecord, catalog: Catalog) -> bool:
    """The model scores on `catalog`: every action it was trained on is in it."""
    try:
        record.action_ids(catalog)
    except RecsysError:
        return False
    return True


@dataclass(frozen=True)
class OffPolicyValues:
    """Doubly robust estimates on the logs: the challenger, uniform random, and (paired with the
    challenger's, same rows and resamples) the champion and the difference, and the difference
    challenger - conservative baseline."""

    challenger: OffPolicyValue
    random_value: float
    champion: OffPolicyValue | None = None
    difference: OffPolicyValue | None = None
    baseline_difference: OffPolicyValue | None = None


def off_policy_values(
    conn: Connection,
    as_of: dt.date,
    catalog: Catalog,
    response: ResponseModel,
    challenger: Policy,
    champion_policy: Policy | None,
    *,
    seed: int = 0,
    baseline_policy: Policy | None = None,
    max_decisions: int | None = None,
) -> OffPolicyValues | None:
    """Doubly robust estimates, on the decisions logged before `as_of`, of the challenger, uniform
    random (over the offers, when the catalog has the rest), the champion and the conservative
    baseline (pass None when the baseline is the champion: the champion's difference is the
    baseline's), as given: `evaluate_challenger` passes them conditioned on offering when the
    catalog has the rest, so a logged rest counts as a context in which each policy's best offer
    is valued by the reward model (its importance weight is 0). All on the same rows and
    resamples: a uniform sample of at most `max_decisions` logged decisions (None: all). None
    without logs."""
    from recsys.evaluation.model_eval import realised_reward
    from recsys.evaluation.ope import load_logged_sample, off_policy_evaluation
    from recsys.model.baselines import UniformRandomPolicy

    logs = load_logged_sample(conn, catalog, max_decisions=max_decisions, seed=seed, until=as_of)
    if len(logs) == 0:
        return None
    rules = response.rules
    paired: dict[str, Policy] = {"random": OffersOnly(UniformRandomPolicy(catalog), catalog)}
    if baseline_policy is not None:
        paired["conservative"] = baseline_policy
    estimates = off_policy_evaluation(
        conn,
        challenger,
        catalog=catalog,
        reward_fn=lambda rows: realised_reward(rows, rules),
        q_fn=response.expected_reward,
        q_matrix=response.reward_matrix,
        logs=logs,
        n_boot=200,
        seed=seed,
        baseline=champion_policy,
        paired=paired,
        max_offers=max_decisions,
    )
    if not estimates:
        return None

    def value(key: str, *, ess: bool = True) -> OffPolicyValue:
        e = estimates[key]
        return OffPolicyValue(e.value, e.lower, e.upper, e.effective_sample_size if ess else None)

    paired_with_champion = "dr_diff" in estimates
    return OffPolicyValues(
        challenger=value("dr"),
        random_value=estimates["random_dr"].value,
        champion=value("baseline_dr", ess=False) if paired_with_champion else None,
        difference=value("dr_diff", ess=False) if paired_with_champion else None,
        baseline_difference=value("conservative_dr_diff", ess=False) if "conservative_dr_diff" in estimates else None,
    )


def evaluate_challenger(
    conn: Connection,
    challenger: Policy,
    *,
    as_of: dt.date,
    states: States,
    response: ResponseModel,
    catalog: Catalog,
    current: ModelRecord | None,
    seed: int,
    baseline: tuple[str, Policy] | None = None,
    refits: Iterable[ResponseModel] | None = None,
    training_offers: int | None = None,
    horizon: tuple[int, int] = (7, 20_000),
    max_decisions: int | None = None,
    contact_rules: ContactRules | None = None,
) -> ChallengerEvaluation:
    """The challenger next to random, the champion (when it scores on this catalog: trained on it,
    or on a catalog it contains) and the conservative
    `baseline` (its model version and policy, `recsys.evaluation.baseline.conservative_baseline`):
    in the simulator on tonight's users, doubly robust on the logs when there are any, and, given
    the response model's bootstrap `refits` (`recsys.model.response_refit`), against the baseline
    under the night's model and each refit (`recsys.evaluation.model_evidence`; `training_offers`:
    how many offers the night's fit trained on, recorded with it for the gate).

    With the rest in the catalog, every one-night value is of the policies conditioned on offering
    (random too: uniform over the offers), and `horizon` (nights, at most that many users) sets the
    rollouts that judge the rests (`horizon_rests`). The off-policy estimates read a uniform sample
    of at most `max_decisions` logged decisions (`GateConfig.off_policy_max_decisions`; None: all).
    `contact_rules`: the campaign's caps and cooldown, applied on every night of those rollouts."""
    full_challenger = challenger
    champion_full = None
    if current is not None and _scores_on(current, catalog):
        # a champion of a smaller catalog is re-evaluated on this one (it never picks the new actions)
        champion_full = load_policy(current, catalog)
    with_rest = catalog.rest_id is not None
    if with_rest:
        challenger = OffersOnly(challenger, catalog)
        if baseline is not None:
            baseline = (baseline[0], OffersOnly(baseline[1], catalog))
    champion_policy = champion_full
    if with_rest and champion_full is not None:
        champion_policy = OffersOnly(champion_full, catalog)
    simulator_value, random_value = simulator_values(challenger, states, response, catalog)
    champion_value = None
    if champion_policy is not None:
        champion_value, _ = simulator_values(champion_policy, states, response, catalog)
    baseline_is_champion = baseline is not None and current is not None and baseline[0] == current.model_version
    baseline_policy = baseline[1] if baseline is not None and not baseline_is_champion else None
    logged = off_policy_values(
        conn,
        as_of,
        catalog,
        response,
        challenger,
        champion_policy,
        seed=seed,
        baseline_policy=baseline_policy,
        max_decisions=max_decisions,
    )
    champion_eval = None
    if champion_value is not None:
        champion_eval = ChampionEvaluation(champion_value, logged.champion if logged is not None else None)
    baseline_diff = None
    if logged is not None and baseline is not None:
        baseline_diff = logged.difference if baseline_is_champion else logged.baseline_difference
    rests = None
    if with_rest:
        rests = horizon_rests(
            full_challenger,
            champion_full,
            states=states,
            response=response,
            catalog=catalog,
            horizon=horizon,
            seed=seed,
            rules=contact_rules,
        )
    evidence = None
    if baseline is not None and refits is not None:
        from recsys.evaluation.model_evidence import model_evidence

        evidence = model_evidence(
            challenger,
            baseline[1],
            states=states,
            catalog=catalog,
            response=response,
            refits=refits,
            training_offers=training_offers,
        )
    return ChallengerEvaluation(
        simulator_value=simulator_value,
        random_value=random_value,
        users=len(states),
        dr=logged.challenger if logged is not None else None,
        random_dr_value=logged.random_value if logged is not None else None,
        dr_diff=logged.difference if logged is not None else None,
        champion=champion_eval,
        baseline=baseline[0] if baseline is not None else None,
        baseline_diff=baseline_diff,
        model_evidence=evidence,
        horizon=rests,
    )


def horizon_rests(
    challenger: Policy,
    champion: Policy | None,
    *,
    states: States,
    response: ResponseModel,
    catalog: Catalog,
    horizon: tuple[int, int],
    seed: int,
    rules: ContactRules | None = None,
) -> HorizonEvaluation:
    """The challenger with its rests, the same challenger always offering (where it rests, its
    best offer), the champion (when there is one) and uniform random (drawn, rests included),
    followed over the horizon
    on the same users and draws; differences: `rests` (challenger - challenger always offering:
    what its rests are worth) and `vs_champion`; `rules`: the contact rules of every night."""
    from recsys.evaluation.horizon import horizon_values
    from recsys.model.baselines import UniformRandomPolicy

    policies: dict[str, Policy] = {
        "challenger": challenger,
        "challenger_offering": OffersOnly(challenger, catalog),
        "random": UniformRandomPolicy(catalog),
    }
    pairs = {"rests": ("challenger", "challenger_offering")}
    if champion is not None:
        policies["champion"] = champion
        pairs["vs_champion"] = ("challenger", "champion")
    nights, users = horizon
    return horizon_values(
        policies,
        pairs,
        states=states,
        response=response,
        catalog=catalog,
        nights=nights,
        max_users=users,
        seed=seed,
        drawn=("random",),
        rules=rules,
    )
