"""`recsys evaluate`: how good is a model? Simulator, logs, and (where it exists) the truth.

- Simulator: the model's greedy offers on tonight's users, valued by the response model it was
  trained with, next to uniform random and the seed-style rule heuristic; with the rest in the
  catalog, also its value over the horizon (the gate's `horizon_nights`, rests included, with its
  95% interval over users), its share of rested user-nights and what its rests add over its best
  offers on the same user-nights (`recsys.evaluation.horizon`).
- Off-policy, from logged offers (`v_logged_offers`): IPS, self-normalised IPS and doubly robust
  estimates with bootstrap intervals; the realised value of a logged offer is its net margin
  (`realised_reward`), the reward model is the response model.
- Against the generator's hidden truth, only when a truth file is given (benchmarks and demos):
  `recsys.benchmark.truth_eval.evaluate_model_against_truth` adds its table to the evaluation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import pandas as pd

from recsys.config import Config
from recsys.config.catalog import REST, Catalog
from recsys.config.reward import RewardRules
from recsys.data.states import load_states
from recsys.db import Connection, fetch_value
from recsys.errors import RecsysError
from recsys.evaluation.estimators import sample_mean
from recsys.evaluation.ope import Estimate, evaluation_report, off_policy_evaluation
from recsys.evaluation.registry import ModelRecord, get_model, load_policy, require_champion
from recsys.model.baselines import Policy, RuleHeuristicPolicy, UniformRandomPolicy

if TYPE_CHECKING:
    from recsys.config.learning import GateConfig
    from recsys.model.contact_rules import ContactRules
    from recsys.model.observation import States
    from recsys.model.response import ResponseModel


def realised_reward(rows: pd.DataFrame, rules: RewardRules) -> np.ndarray:
    """The shop's net value of each logged offer from its recorded outcome.

    A conversion earns the margin on the order's list value minus what the offer gave away
    (percent offers: the list value is revenue / (1 - value%); free shipping: the fee); every offer
    costs its channel's contact cost; a recorded unsubscribe costs the unsubscribe penalty. Past
    campaigns from input files have no unsubscribe outcome (null): nothing is charged for them.
    A rest (offer type `no_offer`: nothing was sent) is worth exactly 0.
    """
    revenue = pd.to_numeric(rows["revenue"], errors="coerce").fillna(0.0).to_numpy(dtype=float)
    converted = rows["converted"].fillna(False).to_numpy(dtype=bool)
    value = pd.to_numeric(rows["offer_value"], errors="coerce").fillna(0.0).to_numpy(dtype=float)
    offer_type = rows["offer_type"].to_numpy(dtype=object)
    channel = rows["channel"].to_numpy(dtype=object)
    net = np.zeros(len(rows))
    for name, cost in rules.offer_cost.items():
        sel = converted & (offer_type == name)
        if cost.rule == "percent_of_order":
            share = np.clip(value[sel] / 100.0, 0.0, 0.95)
            list_value = revenue[sel] / (1.0 - share)
            net[sel] = list_value * (rules.margin_rate - share)
        elif cost.rule == "fee_on_conversion":
            net[sel] = revenue[sel] * rules.margin_rate - cost.fee
        else:
            net[sel] = revenue[sel] * rules.margin_rate
    contact = np.array([rules.contact_cost.get(c, 0.0) for c in channel]) if len(rows) else np.zeros(0)
    if "unsubscribed" in rows:
        unsubscribed = rows["unsubscribed"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    else:
        unsubscribed = np.zeros(len(rows), dtype=bool)
    return np.where(offer_type == REST, 0.0, net - contact - rules.unsubscribe_penalty * unsubscribed)


def _horizon(
    policy: Policy,
    states: States,
    response: ResponseModel,
    catalog: Catalog,
    gate: GateConfig,
    rules: ContactRules | None = None,
) -> dict[str, float]:
    """The policy over the gate's horizon, rests included, and what its rests add over its best
    offers on the same users and draws (`recsys.evaluation.horizon`), under the campaign's contact
    `rules`."""
    from recsys.evaluation.horizon import horizon_values
    from recsys.model.baselines import OffersOnly

    h = horizon_values(
        {"policy": policy, "offering": OffersOnly(policy, catalog)},
        {"rests": ("policy", "offering")},
        states=states,
        response=response,
        catalog=catalog,
        nights=gate.horizon_nights,
        max_users=gate.horizon_users,
        rules=rules,
    )
    value, rests = h.values["policy"], h.differences["rests"]
    return {
        "horizon_nights": float(h.nights),
        "horizon_value": value.value,
        "horizon_lower": value.lower,
        "horizon_upper": value.upper,
        "horizon_rest_share": h.rest_share["policy"],
        "horizon_rests_value": rests.value,
        "horizon_rests_lower": rests.lower,
        "horizon_rests_upper": rests.upper,
    }


class TruthTable(Protocol):
    """Values against a hidden truth (`recsys.benchmark.truth_eval.TruthEvaluation`)."""

    def table(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ModelEvaluation:
    """`recsys evaluate`'s result: a registered model on a night's users, in the simulator and on the logs."""

    model_version: str
    as_of: dt.date
    simulator: dict[str, float]
    """simulator_value, model_greedy_value, rule_value, random_value: value per user-night, each with
    its 95% interval (`<name>_lower`, `<name>_upper`: for every user of the night when `users`, the
    users evaluated, are a uniform sample of `population`; no width when they are all of them); with the
    rest, horizon_nights, horizon_value (with horizon_lower / horizon_upper), horizon_rest_share and
    horizon_rests_value (with its rests - always offering, per user-night, and its interval)."""
    off_policy: dict[str, Estimate] = field(default_factory=dict)
    truth_eval: TruthTable | None = None
    """Added by the benchmark (`evaluate_model_against_truth`) when a truth exists."""
    fit_report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"as_of": self.as_of.isoformat(), **self.simulator}
        if "dr" in self.off_policy:
            out["dr_value"] = self.off_policy["dr"].value
            out["dr_lower"] = self.off_policy["dr"].lower
            out["dr_upper"] = self.off_policy["dr"].upper
        out["off_policy"] = {k: v.to_dict() for k, v in self.off_policy.items()}
        if self.truth_eval is not None:
            out["truth"] = self.truth_eval.to_dict()
        return out

    def report(self) -> str:
        s = self.simulator
        lines = [
            f"model {self.model_version}, users as of {self.as_of}",
            "",
            "Simulator (the response model the policy trained on), value per user-night:",
            "  " + "   ".join(f"{label} {self._simulator_value(key)}" for key, label in _SIMULATOR_ROWS),
            f"  {self._simulator_users()}",
        ]
        if "horizon_value" in s:
            lines.append(
                f"  over {s['horizon_nights']:.0f} nights, rests included: {s['horizon_value']:.5f} "
                f"[{s['horizon_lower']:.5f}, {s['horizon_upper']:.5f}], rests on {s['horizon_rest_share']:.1%} of "
                f"user-nights, worth {s['horizon_rests_value']:+.5f} [{s['horizon_rests_lower']:+.5f}, "
                f"{s['horizon_rests_upper']:+.5f}] over always offering"
            )
        fit = self.fit_report
        if fit:
            from recsys.model.response_fit import format_fit_report

            lines += ["", "Response model fit on held-out logs:", format_fit_report(fit)]
        lines += ["", evaluation_report(self.truth_eval, self.off_policy or None, policy_name=self.model_version)]
        return "\n".join(lines)

    def _simulator_value(self, key: str) -> str:
        s = self.simulator
        if f"{key}_lower" not in s or s[f"{key}_lower"] == s[f"{key}_upper"]:
            return f"{s[key]:.5f}"
        return f"{s[key]:.5f} [{s[f'{key}_lower']:.5f}, {s[f'{key}_upper']:.5f}]"

    def _simulator_users(self) -> str:
        users, population = int(self.simulator.get("users", 0)), int(self.simulator.get("population", 0))
        if users < population:
            return f"(a uniform sample of {users:,} of the night's {population:,} users; 95% intervals for all of them)"
        return f"(every one of the night's {users:,} users)" if users else ""


_SIMULATOR_ROWS = (
    ("simulator_value", "policy"),
    ("model_greedy_value", "greedy on the model"),
    ("rule_value", "rule heuristic"),
    ("random_value", "uniform random"),
)


def _model(conn: Connection, model_version: str | None, catalog: Catalog) -> ModelRecord:
    record = get_model(conn, model_version) if model_version else require_champion(conn)
    record.check_compatible(catalog)
    return record


def evaluate_model(
    conn: Connection,
    config: Config,
    *,
    model_version: str | None = None,
    as_of: dt.date | None = None,
    n_boot: int = 200,
    max_offers: int | Literal["gate"] | None = "gate",
) -> ModelEvaluation:
    """The model (the champion by default) on the users as of `as_of` (the latest features by
    default; at most about `[learning] max_users` of them, a uniform sample, and then each simulator
    value with its interval for every user: `sample_mean`) in its response model's simulator, and
    off-policy on the logged decisions: on a
    uniform sample of at most `max_offers` of them (None: all; by default the gate's
    `off_policy_max_decisions`), so that the night's evaluation costs the same however long the
    logs grow; the intervals include the sampling."""
    from recsys.model.response import ResponseModel

    catalog = config.catalog
    rules = config.reward
    if max_offers == "gate":
        max_offers = config.gate.off_policy_max_decisions
    record = _model(conn, model_version, catalog)
    if as_of is None:
        as_of = fetch_value(conn, "select max(as_of) from recsys.user_features")
        if as_of is None:
            raise RecsysError("no features have been built: run `recsys features --as-of DATE` first")
    states = load_states(conn, as_of, max_users=config.learning.max_users)
    if len(states) == 0:
        raise RecsysError(f"no user features as of {as_of}")
    policy = load_policy(record, catalog)
    response = ResponseModel.from_dict(record.response_model, catalog)
    mask = states.action_mask(catalog)
    rewards = response.reward_matrix(states.obs)

    def per_user(p: Any) -> np.ndarray:
        probs = p.probabilities(states.obs, mask)
        greedy = probs.argmax(axis=1)
        has = probs.max(axis=1) > 0
        return np.where(has, rewards[np.arange(len(greedy)), greedy], 0.0)

    uniform = UniformRandomPolicy(catalog).probabilities(states.obs, mask)
    values = {
        "simulator_value": per_user(policy),
        # greedy on the model, from the rewards above (ResponseGreedyPolicy would compute them again)
        "model_greedy_value": np.where(mask.any(axis=1), np.where(mask, rewards, -np.inf).max(axis=1), 0.0),
        "rule_value": per_user(RuleHeuristicPolicy(catalog)),
        "random_value": (uniform * rewards).sum(axis=1),
    }
    # each value's interval for every user of the night, when the users are a sample of them
    simulator: dict[str, float] = {"users": float(len(states)), "population": float(states.population or len(states))}
    for name, v in values.items():
        estimate = sample_mean(v, population=states.population)
        simulator |= {name: estimate.value, f"{name}_lower": estimate.lower, f"{name}_upper": estimate.upper}
    if catalog.rest_id is not None:
        from recsys.model.contact_rules import ContactRules

        simulator |= _horizon(policy, states, response, catalog, config.gate, ContactRules.of(config.rules))
    ope = off_policy_evaluation(
        conn,
        policy,
        catalog=catalog,
        reward_fn=lambda rows: realised_reward(rows, rules),
        q_fn=response.expected_reward,
        q_matrix=response.reward_matrix,
        n_boot=n_boot,
        max_offers=max_offers,
    )
    evaluation = ModelEvaluation(
        record.model_version, as_of, simulator, ope, fit_report=record.response_model.get("fit_report", {})
    )
    return evaluation
