"""Policies against the generator's hidden truth: the benchmark's table of values per user and night.

`evaluate_against_truth` values every policy's greedy offer, for the users and allowed actions that
scoring sees on a night, with the truth's expected net value, next to uniform random, the best fixed
offer and the oracle. `evaluate_model_against_truth` adds that table to a registered model's
evaluation. Called by `recsys evaluate --truth`, the demo, the simulator and the benchmarks: the
only code, with the generator, that reads the truth.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.benchmark.synth.truth import with_rest
from recsys.config.catalog import Catalog
from recsys.data.states import load_states
from recsys.db import Connection
from recsys.errors import GenerateError, RecsysError
from recsys.evaluation.model_eval import ModelEvaluation
from recsys.evaluation.ope import USER_CHUNK, bootstrap_sums, checked_probabilities, percentile_interval
from recsys.model.baselines import Policy, choose_from_probabilities
from recsys.model.observation import FEATURE_NAMES, States

if TYPE_CHECKING:
    from recsys.benchmark.synth.truth import GroundTruth

RANDOM_ROW = "random"
FIXED_ROW = "best fixed"
ORACLE_ROW = "oracle"
_RESERVED = (RANDOM_ROW, FIXED_ROW, ORACLE_ROW)


# --- against the ground truth -----------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyValue:
    """One row of the truth table: a policy's (or reference's) mean true value per user and night."""

    name: str
    value: float
    lower: float
    upper: float
    fraction_of_oracle: float
    normalised: float
    """(value - random) / (oracle - random): 0 for random, 1 for the oracle."""
    normalised_lower: float
    normalised_upper: float
    sampled_value: float
    """Mean value if actions were drawn from the policy's probabilities instead of taken greedily."""
    is_reference: bool
    note: str = ""
    paired_difference: float = math.nan
    """(paired row - this row) / (oracle - random), when the evaluation names a paired row."""
    paired_lower: float = math.nan
    paired_upper: float = math.nan

    def to_dict(self) -> dict:
        def num(x: float) -> float | None:
            return None if not math.isfinite(x) else float(x)

        return {
            "name": self.name,
            "value": num(self.value),
            "lower": num(self.lower),
            "upper": num(self.upper),
            "fraction_of_oracle": num(self.fraction_of_oracle),
            "normalised": num(self.normalised),
            "normalised_lower": num(self.normalised_lower),
            "normalised_upper": num(self.normalised_upper),
            "sampled_value": num(self.sampled_value),
            "is_reference": self.is_reference,
            "note": self.note,
            "paired_difference": num(self.paired_difference),
            "paired_lower": num(self.paired_lower),
            "paired_upper": num(self.paired_upper),
        }


@dataclass(frozen=True)
class TruthEvaluation:
    """Policies against the generator's truth on one night: the table rows and how they were made."""

    as_of: dt.date
    n_users: int
    n_users_without_channel: int
    """Users who can receive no offer (no consented channel with an address): worth 0 to every policy."""
    rows: tuple[PolicyValue, ...]
    fixed_action_id: int
    n_boot: int
    seed: int
    alpha: float
    truth: dict
    """Where the truth came from: generator seed, users, days, end date."""
    paired_with: str | None = None
    """The row every row's paired difference is taken from (None: no paired differences)."""

    def row(self, name: str) -> PolicyValue:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row {name!r} in the truth evaluation (rows: {[r.name for r in self.rows]})")

    @property
    def random(self) -> PolicyValue:
        return self.row(RANDOM_ROW)

    @property
    def best_fixed(self) -> PolicyValue:
        return self.row(FIXED_ROW)

    @property
    def oracle(self) -> PolicyValue:
        return self.row(ORACLE_ROW)

    def table(self) -> str:
        """The rows as aligned text, references first and the oracle last."""
        level = f"{1 - self.alpha:.0%}"
        header = ["policy", "value/user/night", f"{level} CI", "of oracle", "normalised", f"{level} CI", "if sampled"]
        if self.paired_with is not None:
            header += ["paired diff", f"{level} CI"]
        body = []
        for r in self.rows:
            line = [
                r.name,
                f"{r.value:.4f}",
                f"[{r.lower:.4f}, {r.upper:.4f}]",
                _pct(r.fraction_of_oracle),
                f"{r.normalised:.3f}",
                f"[{r.normalised_lower:.3f}, {r.normalised_upper:.3f}]",
                f"{r.sampled_value:.4f}",
            ]
            if self.paired_with is not None:
                line += [f"{r.paired_difference:+.3f}", f"[{r.paired_lower:+.3f}, {r.paired_upper:+.3f}]"]
            body.append(line)
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
        lines = [
            f"Against the ground truth, night {self.as_of}: {self.n_users:,} users "
            f"({self.n_users_without_channel:,} reachable on no channel count as 0); "
            f"bootstrap over users, {self.n_boot} resamples"
            + (
                f"; paired diff = ({self.paired_with} - row) / (oracle - random), on the same resampled users"
                if self.paired_with is not None
                else ""
            ),
            "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        ]
        for r, line in zip(self.rows, body, strict=True):
            text = "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
            lines.append(text + (f"  {r.note}" if r.note else ""))
        return "\n".join(line.rstrip() for line in lines)

    def to_dict(self) -> dict:
        """JSON-able (NaN becomes None)."""
        return {
            "as_of": self.as_of.isoformat(),
            "n_users": self.n_users,
            "n_users_without_channel": self.n_users_without_channel,
            "fixed_action_id": self.fixed_action_id,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "alpha": self.alpha,
            "truth": dict(self.truth),
            "rows": [r.to_dict() for r in self.rows],
        }


def _pct(x: float) -> str:
    return f"{x:.1%}" if math.isfinite(x) else "n/a"


def evaluate_against_truth(
    conn: Connection,
    truth_path: Path,
    as_of: dt.date,
    policies: Mapping[str, Policy],
    *,
    catalog: Catalog,
    n_boot: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    paired_with: str | None = None,
    choices: Mapping[str, np.ndarray] | None = None,
) -> TruthEvaluation:
    """Every policy's greedy offer for each user with features as of `as_of`, valued by the truth.

    The users, their observations and allowed actions are exactly what scoring sees on that night
    (`load_states(conn, as_of)`, `States.action_mask`); the value of an offer is the truth's expected
    net value on night `as_of` with the user's offers of the previous 7 days as fatigue. References,
    from the same truth and mask: `random` = the uniform random policy's expected value (the mean over
    each user's allowed actions, not one draw), `best fixed` = the single offer with the highest mean
    value when sent to everybody who can receive it (the others get nothing, worth 0), `oracle` = each
    user's best allowed offer. Intervals are percentile bootstraps over users, the same resamples for
    every row, so normalised-score intervals account for the shared noise. With `paired_with` (the
    name of one of `policies`), every row also gets its paired difference from that policy in
    normalised units, (paired - row) / (oracle - random), with its interval on the same resamples.
    `choices` adds rows decided from more than the observation (the bench's posterior ceiling): per
    name, an action id per user of `load_states(conn, as_of)` in its order (-1: nothing sent); a
    choice of an action the user cannot receive is an error.
    """
    choices = dict(choices or {})
    bad = [name for name in [*policies, *choices] if name in _RESERVED]
    if bad:
        raise ValueError(f"policy names {bad} are reserved for the reference rows {list(_RESERVED)}")
    both = [name for name in choices if name in policies]
    if both:
        raise ValueError(f"names {both} are given both as policies and as choices")
    if paired_with is not None and paired_with not in policies and paired_with not in choices:
        raise ValueError(f"paired_with={paired_with!r} is not one of the policies {[*policies, *choices]}")
    truth, states = _truth_and_states(conn, truth_path, as_of, catalog)
    n = len(states)
    k = states.raw[:, FEATURE_NAMES.index("offers_last_7d")]
    mask = states.action_mask(catalog)
    for name, chosen in choices.items():
        chosen = np.asarray(chosen)
        if chosen.shape != (n,):
            raise ValueError(f"choices[{name!r}] has shape {chosen.shape}, expected one action per user ({n},)")
        sent = chosen >= 0
        if (chosen >= catalog.n_actions).any() or not mask[np.flatnonzero(sent), chosen[sent]].all():
            raise ValueError(f"choices[{name!r}] picks actions the users cannot receive")
    names = [*policies, *choices]
    random_u, oracle_u, greedy_u, sampled_u, column_sums = _per_user_values(
        truth, states, mask, k, policies, catalog, as_of, choices
    )

    fixed = int(column_sums.argmax())
    fixed_u = np.zeros(n)
    can = mask[:, fixed] & ~catalog.is_rest(fixed)  # resting everybody is worth 0
    fixed_u[can] = truth.expected_value(
        states.user_ids[can], np.full(int(can.sum()), fixed), night=as_of, offers_last_7d=k[can], respect_consent=True
    )

    labels = [RANDOM_ROW, FIXED_ROW, *names, ORACLE_ROW]
    per_user = np.vstack([random_u, fixed_u, greedy_u, oracle_u])
    sampled = [random_u.mean(), fixed_u.mean(), *sampled_u.mean(axis=1), oracle_u.mean()]
    action = catalog.actions[fixed]
    fixed_note = f"({action.describe(catalog.value_units.get(action.offer_type, ''))})"
    rows = _policy_values(labels, per_user, sampled, fixed_note, n_boot=n_boot, seed=seed, alpha=alpha)
    if paired_with is not None:
        rows = _paired(rows, per_user, labels.index(paired_with), n_boot=n_boot, seed=seed, alpha=alpha)
    meta = truth.meta
    return TruthEvaluation(
        as_of=as_of,
        n_users=n,
        n_users_without_channel=int((~mask.any(axis=1)).sum()),
        rows=tuple(rows),
        fixed_action_id=fixed,
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
        truth={key: meta.get(key) for key in ("seed", "users", "days", "end_date") if key in meta},
        paired_with=paired_with,
    )


def _truth_and_states(
    conn: Connection, truth_path: Path, as_of: dt.date, catalog: Catalog
) -> tuple[GroundTruth, States]:
    """The generator's truth (`GroundTruth`) and the users with features as of `as_of`, checked to
    belong together: the same catalog, and every user described by the truth."""
    from recsys.benchmark.synth.truth import GroundTruth

    truth = GroundTruth.load(truth_path)
    if truth.catalog.fingerprint() != catalog.without_rest().fingerprint():
        raise RecsysError(
            f"{truth_path}: the truth was generated with another offer catalog "
            f"({truth.catalog.n_actions} actions) than the one evaluated ({catalog.n_actions} actions)"
        )
    states = load_states(conn, as_of)
    if len(states) == 0:
        raise RecsysError(f"no user features as of {as_of}: build them first (recsys features --as-of {as_of})")
    try:
        truth.index_of(states.user_ids)
    except GenerateError as e:
        raise RecsysError(f"{truth_path} does not describe the users in the database: {e}") from e
    return truth, states


def _per_user_values(
    truth: GroundTruth,
    states: States,
    mask: np.ndarray,
    k: np.ndarray,
    policies: Mapping[str, Policy],
    catalog: Catalog,
    as_of: dt.date,
    choices: Mapping[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per user, by the truth: the random policy's expected value, the oracle's, each policy's
    greedy offer's (policies, then choices x users) and its sampled policy's (a choice's: its own);
    and per action, the sum of its values over the users allowed it."""
    n = len(states)
    names = [*policies, *choices]
    random_u, oracle_u = np.zeros(n), np.zeros(n)
    greedy_u = np.zeros((len(names), n))
    sampled_u = np.zeros((len(names), n))
    column_sums = np.zeros(catalog.n_actions)
    for lo in range(0, n, USER_CHUNK):
        sl = slice(lo, lo + USER_CHUNK)
        ids, m, kk, obs = states.user_ids[sl], mask[sl], k[sl], states.obs[sl]
        values = with_rest(truth.value_matrix(ids, night=as_of, offers_last_7d=kk, respect_consent=True), catalog)
        allowed_values = np.where(m, values, 0.0)
        n_allowed = m.sum(axis=1)
        random_u[sl] = np.divide(allowed_values.sum(axis=1), n_allowed, out=np.zeros(len(ids)), where=n_allowed > 0)
        oracle_u[sl] = np.where(n_allowed > 0, np.where(m, values, -np.inf).max(axis=1), 0.0)
        column_sums += allowed_values.sum(axis=0)
        for j, name in enumerate(names):
            if name in policies:
                probs = checked_probabilities(policies[name], obs, m)
                actions, _ = choose_from_probabilities(probs)
            else:
                actions = np.asarray(choices[name][sl], dtype=np.int64)
            sent = (actions >= 0) & ~catalog.is_rest(actions)  # a rest is worth 0
            greedy = np.zeros(len(ids))
            greedy[sent] = truth.expected_value(
                ids[sent], actions[sent], night=as_of, offers_last_7d=kk[sent], respect_consent=True
            )
            greedy_u[j, sl] = greedy
            sampled_u[j, sl] = (probs * allowed_values).sum(axis=1) if name in policies else greedy
    return random_u, oracle_u, greedy_u, sampled_u, column_sums


def _policy_values(
    labels: list[str],
    per_user: np.ndarray,
    sampled: list[Any],
    fixed_note: str,
    *,
    n_boot: int,
    seed: int,
    alpha: float,
) -> list[PolicyValue]:
    """The table's rows from per-user values (rows: random first, oracle last), with bootstrap
    intervals over users, the same resamples for every row."""
    n = per_user.shape[1]
    means = per_user.mean(axis=1)
    replicates = bootstrap_sums(per_user, n_boot, np.random.default_rng(seed)) / n if n_boot > 0 else None
    r_mean, o_mean = means[0], means[-1]
    rows = []
    for i, label in enumerate(labels):
        span = o_mean - r_mean
        normalised = (means[i] - r_mean) / span if span != 0 else math.nan
        if replicates is not None:
            lower, upper = percentile_interval(replicates[:, i], alpha)
            with np.errstate(divide="ignore", invalid="ignore"):
                norm_reps = (replicates[:, i] - replicates[:, 0]) / (replicates[:, -1] - replicates[:, 0])
            if label == RANDOM_ROW:
                norm_lower = norm_upper = 0.0
            elif label == ORACLE_ROW:
                norm_lower = norm_upper = 1.0
            else:
                norm_lower, norm_upper = percentile_interval(norm_reps, alpha)
        else:
            lower = upper = norm_lower = norm_upper = math.nan
        rows.append(
            PolicyValue(
                name=label,
                value=float(means[i]),
                lower=lower,
                upper=upper,
                fraction_of_oracle=float(means[i] / o_mean) if o_mean != 0 else math.nan,
                normalised=0.0 if label == RANDOM_ROW else 1.0 if label == ORACLE_ROW else float(normalised),
                normalised_lower=norm_lower,
                normalised_upper=norm_upper,
                sampled_value=float(sampled[i]),
                is_reference=label in _RESERVED,
                note=fixed_note if label == FIXED_ROW else "",
            )
        )
    return rows


def _paired(
    rows: list[PolicyValue], per_user: np.ndarray, j: int, *, n_boot: int, seed: int, alpha: float
) -> list[PolicyValue]:
    """`rows` with their paired difference from row `j`: (row j - row) / (oracle - random), and its
    percentile interval on the resamples `_policy_values` drew (the same seed, the same users)."""
    means = per_user.mean(axis=1)
    span = means[-1] - means[0]
    diffs = (means[j] - means) / span if span != 0 else np.full(len(means), math.nan)
    if n_boot > 0:
        replicates = bootstrap_sums(per_user, n_boot, np.random.default_rng(seed)) / per_user.shape[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            spans = replicates[:, -1] - replicates[:, 0]
            differences = (replicates[:, [j]] - replicates) / spans[:, None]
        bounds = [percentile_interval(differences[:, i], alpha) for i in range(len(rows))]
    else:
        bounds = [(math.nan, math.nan)] * len(rows)
    return [
        dataclasses.replace(r, paired_difference=float(d), paired_lower=lo, paired_upper=hi)
        for r, d, (lo, hi) in zip(rows, diffs, bounds, strict=True)
    ]


def evaluate_model_against_truth(
    conn: Connection, catalog: Catalog, evaluation: ModelEvaluation, truth_path: Path, *, n_boot: int = 200
) -> ModelEvaluation:
    """`evaluation` (of a registered model) with the truth table of its night added: the model, the
    rule heuristic (once: not again when the model is the rule heuristic), the newest trained PPO
    model of the catalog when it is another model (with its gate decision: a rejected challenger is
    shown, not hidden) and greedy on the model's own response model, against the references. Every
    row carries its paired difference from the model (`TruthEvaluation.paired_with`)."""
    from recsys.evaluation.registry import PPO, RULE_HEURISTIC, get_model, latest_model, load_policy
    from recsys.model.baselines import ResponseGreedyPolicy, RuleHeuristicPolicy
    from recsys.model.response import ResponseModel

    record = get_model(conn, evaluation.model_version)
    name = "ppo" if record.algorithm.upper() == PPO else f"champion ({record.algorithm})"
    policies: dict[str, Policy] = {name: load_policy(record, catalog)}
    if record.algorithm != RULE_HEURISTIC:
        policies["rule heuristic"] = RuleHeuristicPolicy(catalog)
    newest = latest_model(conn, catalog, algorithm=PPO)
    if newest is not None and newest.model_version != record.model_version:
        policies[f"newest ppo ({newest.gate_decision or 'not judged'})"] = load_policy(newest, catalog)
    response = ResponseModel.from_dict(record.response_model, catalog)
    policies["greedy on response model"] = ResponseGreedyPolicy(catalog, response)
    truth_eval = evaluate_against_truth(
        conn, truth_path, evaluation.as_of, policies, catalog=catalog, n_boot=n_boot, paired_with=name
    )
    return dataclasses.replace(evaluation, truth_eval=truth_eval)
