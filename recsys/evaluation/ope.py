"""How good is a policy, from logs: off-policy estimates, used by `recsys evaluate` and the gate.

(Against the generator's hidden truth, where one exists, is the benchmark's business:
`recsys.benchmark.truth_eval`, which uses the bootstrap helpers of `recsys.evaluation.estimators`.)

- **Off-policy, from logged offers** (`off_policy_evaluation`), the real-world case: inverse
  propensity scoring (IPS), self-normalised IPS and doubly robust estimates of a policy's value per
  logged decision, from `recsys.v_logged_offers` (the features the system had when it decided, the
  consent when the offer was sent, the logged propensity, the outcome: read by
  `recsys.data.logged_offers.load_logged_offers`), each with a percentile bootstrap confidence
  interval. The estimators (`ips`, `snips`, `doubly_robust`, ...) are pure functions on arrays in
  `recsys.evaluation.estimators`, importable from here too. The logged decisions include the rests
  (the logging policy chose no offer): their reward is 0 and the reward model's value of the rest
  is 0, so a policy that rests where the logs rested is credited exactly 0 there, weighted like any
  other decision by its probability of the rest over the logged propensity.

`evaluation_report` renders the estimates (and a truth table, when given one) for the command line.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.config.catalog import Catalog
from recsys.data.logged_offers import OfferLog, logged_offers_sql
from recsys.data.logged_offers import load_logged_offers as load_offer_log
from recsys.data.logged_sample import probe_window
from recsys.db import Connection, fetch_value
from recsys.evaluation.estimators import (
    USER_CHUNK,
    Estimate,
    bootstrap_estimates,
    bootstrap_sums,
    checked_probabilities,
    direct_method,
    doubly_robust,
    estimator_specs,
    ips,
    on_policy_mean,
    percentile_interval,
    snips,
)
from recsys.model.baselines import Policy

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

LoggedOffers = OfferLog
"""The logged decisions off-policy evaluation reads (`recsys.data.logged_offers.OfferLog`)."""


def load_logged_offers(
    conn: Connection, catalog: Catalog, *, since: dt.date | None = None, until: dt.date | None = None
) -> OfferLog:
    """The logged decisions off-policy evaluation can use, with since <= features_as_of < until
    (None: open): those with the features of their day and a known propensity, the others counted
    in `skipped`. Read by `recsys.data.logged_offers.load_logged_offers` (its docstring says how the
    observation and the allowed actions of each decision are built: the consent is the one the user
    had when the offer was sent).
    """
    return load_offer_log(conn, catalog, since=since, until=until).evaluable()


def load_logged_sample(
    conn: Connection,
    catalog: Catalog,
    *,
    max_decisions: int | None,
    seed: int = 0,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> OfferLog:
    """`load_logged_offers`, read as a uniform sample in the database when the window holds more
    than `max_decisions` decisions (None: all), so that a night reads a bounded part of growing
    logs. The sample holds at least `max_decisions` usable decisions (or all of them):
    `OfferLog.sample` then draws exactly that many, uniformly. Its rate starts from an upper bound
    of the window's decisions (sql/logged_offers/decisions_upper_bound.sql) times the share of
    them that can be used (the features of their day and a known propensity, counted on a small
    sample of the same hash: `probe_window`), with a margin for chance; a sample that still falls
    short is read again at a higher rate, which keeps every decision of the first. A window whose
    upper bound is within `max_decisions` is read whole, without the probe. `skipped` counts those
    of the sample."""
    if max_decisions is None:
        return load_logged_offers(conn, catalog, since=since, until=until)
    window = {"decided_from": since, "decided_before": until}
    upper = int(fetch_value(conn, logged_offers_sql("decisions_upper_bound"), window) or 0)
    if upper <= max_decisions:  # a small shop: every decision, whatever share of them is usable
        return load_offer_log(conn, catalog, since=since, until=until).evaluable()
    probe = probe_window(conn, upper=upper, decided_from=since, decided_before=until, rests=True, seed=seed)
    rate = min(1.0, _SAMPLE_MARGIN * max_decisions / max(upper * probe.share("usable"), 1))
    while True:
        logs = load_offer_log(
            conn, catalog, since=since, until=until, sample_rate=rate if rate < 1.0 else None, sample_seed=seed
        ).evaluable()
        if rate >= 1.0 or len(logs) >= max_decisions:
            return logs
        log.info("off-policy evaluation: %d usable decisions at rate %.3f: reading a larger sample", len(logs), rate)
        rate = min(1.0, rate * _SAMPLE_MARGIN * max_decisions / max(len(logs), 1))


_SAMPLE_MARGIN = 1.5
"""How many more usable decisions a database sample reads than it needs: room for chance (in the
sample and in the probe's share)."""


def target_probabilities(policy: Policy, logs: OfferLog) -> np.ndarray:
    """The policy's probability of each logged action in its logged context (0 for off-catalog offers)."""
    return _policy_terms([policy], logs, None, None)[0][0]


def _policy_terms(
    policies: list[Policy],
    logs: OfferLog,
    q_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    q_matrix: Callable[[np.ndarray], np.ndarray] | None,
    chunk: int = 65_536,
) -> tuple[list[np.ndarray], np.ndarray | None, list[np.ndarray]]:
    """In one pass over the logs, for each policy: its probability of the logged action (0 where
    off-catalog) and E_{a ~ policy}[q(x, a)]; and q(x, logged action) (0 where off-catalog: its
    weight is 0). Without a reward model, only the probabilities (and None, []).

    Each policy's probabilities are computed once per chunk. With `q_matrix` (every action's value
    at once), the reward model runs once per chunk for all the policies; with `q_fn` alone, once
    per action a policy may choose, per policy."""
    n = len(logs)
    targets = [np.zeros(n) for _ in policies]
    with_q = q_fn is not None or q_matrix is not None
    q_logged = np.zeros(n) if with_q else None
    q_targets = [np.zeros(n) for _ in policies] if with_q else []
    for lo in range(0, n, chunk):
        sl = slice(lo, lo + chunk)
        obs = logs.obs[sl]
        a = logs.action_ids[sl]
        known = np.flatnonzero(a >= 0)
        probs = [checked_probabilities(policy, obs, logs.mask[sl]) for policy in policies]
        for p, target in zip(probs, targets, strict=True):
            target[lo + known] = p[known, a[known]]
        if q_matrix is not None:
            q = np.asarray(q_matrix(obs), dtype=np.float64)
            q_logged[lo + known] = q[known, a[known]]  # type: ignore[index]
            for p, q_target in zip(probs, q_targets, strict=True):
                q_target[sl] = np.einsum("na,na->n", p, q)
        elif q_fn is not None:
            if len(known):
                q_logged[lo + known] = np.asarray(q_fn(obs[known], a[known]), dtype=np.float64)  # type: ignore[index]
            for p, q_target in zip(probs, q_targets, strict=True):
                for action in np.flatnonzero(p.max(axis=0) > 0):
                    rows = np.flatnonzero(p[:, action] > 0)
                    value = np.asarray(q_fn(obs[rows], np.full(len(rows), action, dtype=np.int64)), dtype=np.float64)
                    q_target[lo + rows] += p[rows, action] * value
    return targets, q_logged, q_targets


def _rest_valued_zero(
    q_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], catalog: Catalog
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """`q_fn` with the rest valued 0: its reward is known, nothing for a reward model to estimate."""
    if catalog.rest_id is None:
        return q_fn

    def q(obs: np.ndarray, action_ids: np.ndarray) -> np.ndarray:
        values = np.asarray(q_fn(obs, action_ids), dtype=np.float64)
        return np.where(catalog.is_rest(action_ids), 0.0, values)

    return q


def _rest_column_zero(
    q_matrix: Callable[[np.ndarray], np.ndarray], catalog: Catalog
) -> Callable[[np.ndarray], np.ndarray]:
    """`q_matrix` with the rest's column 0 (`_rest_valued_zero` for every action at once)."""
    if catalog.rest_id is None:
        return q_matrix

    def q(obs: np.ndarray) -> np.ndarray:
        values = np.array(q_matrix(obs), dtype=np.float64)
        values[:, catalog.rest_id] = 0.0
        return values

    return q


def off_policy_evaluation(
    conn: Connection,
    policy: Policy,
    *,
    catalog: Catalog,
    reward_fn: Callable[[pd.DataFrame], np.ndarray],
    q_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
    n_boot: int = 500,
    seed: int = 0,
    alpha: float = 0.05,
    logs: OfferLog | None = None,
    baseline: Policy | None = None,
    paired: Mapping[str, Policy] | None = None,
    max_offers: int | None = None,
    q_matrix: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Estimate]:
    """Estimates of `policy`'s mean value per logged decision, from `recsys.v_logged_offers`.

    `reward_fn(rows)` turns the logged rows (`OfferLog.rows`, a DataFrame with the outcome
    columns converted / revenue / channel / ...) into the realised net value of each decision.
    `q_fn(obs, action_ids)` is a reward model's expected reward; without it the doubly robust
    and direct-method estimates are skipped. `q_matrix(obs)`, the same model's value of every
    action at once ((n, n_actions), `ResponseModel.reward_matrix`), computes the same estimates
    in one reward-model pass per chunk for every policy (pass either or both; with it, `q_fn` is
    not called). Keys: "logged" (the logging policy's own mean reward),
    "ips", "snips", and with `q_fn` "dm" and "dr". Empty when no logged decision can be used.
    Every estimate uses the same bootstrap resamples (`seed`). Pass `logs` (from
    `load_logged_offers`) to evaluate several policies on one read of the view. With `baseline` and
    `q_fn`, "baseline_dr" is the baseline's own doubly robust estimate and "dr_diff" the paired
    difference policy - baseline: both are computed on
    the same rows and resamples, so what they share (the logged rewards, the reward model's error)
    cancels and the interval is that of the difference, much narrower than two separate intervals.
    Rest decisions in the logs count with reward 0 whatever `reward_fn` makes of their rows, and
    the rest's value under `q_fn` is 0 (nothing is sent: no conversion, no contact cost, no
    unsubscribe risk).
    `paired` adds more such comparisons on the same resamples: for each name k, "k_dr" and
    "k_dr_diff" (the gate pairs a challenger with the champion and with the rule heuristic at once).
    With `max_offers`, the estimates use a uniform sample of at most that many usable decisions
    (`OfferLog.sample`, by `seed`): the night's cost stays flat as the logs grow, and the intervals
    widen accordingly.
    """
    if logs is None:
        logs = load_logged_sample(conn, catalog, max_decisions=max_offers, seed=seed, since=since, until=until)
    logs = logs.evaluable()
    if max_offers is not None and len(logs) > max_offers:
        log.info("off-policy evaluation: a uniform sample of %d of %d logged decisions", max_offers, len(logs))
        logs = logs.sample(max_offers, seed)
    if logs.skipped.get("no_features") or logs.skipped.get("no_propensity"):
        log.info(
            "off-policy evaluation: left out %d logged offers without features of their day and %d without a "
            "propensity",
            logs.skipped["no_features"],
            logs.skipped["no_propensity"],
        )
    if len(logs) == 0:
        return {}
    rewards = np.asarray(reward_fn(logs.rows), dtype=np.float64)
    if rewards.shape != (len(logs),):
        raise ValueError(f"reward_fn returned shape {rewards.shape} for {len(logs)} logged offers")
    rewards = np.where(logs.is_rest, 0.0, rewards)
    comparisons = {"baseline": baseline} if baseline is not None else {}
    others = {**comparisons, **(paired or {})}
    if q_fn is not None:
        q_fn = _rest_valued_zero(q_fn, catalog)
    if q_matrix is not None:
        q_matrix = _rest_column_zero(q_matrix, catalog)
    with_q = q_fn is not None or q_matrix is not None
    policies = [policy, *others.values()] if with_q else [policy]  # the pairs are doubly robust
    targets, q_logged, q_targets = _policy_terms(policies, logs, q_fn, q_matrix)
    if q_logged is None:
        return bootstrap_estimates(
            estimator_specs(rewards, targets[0], logs.propensity), n_boot=n_boot, seed=seed, alpha=alpha
        )
    specs = estimator_specs(rewards, targets[0], logs.propensity, q_logged, q_targets[0])
    for k, name in enumerate(others, start=1):
        base = estimator_specs(rewards, targets[k], logs.propensity, q_logged, q_targets[k])
        diff = (specs["dr"][0] - base["dr"][0], None, min(specs["dr"][2], base["dr"][2]))
        specs[f"{name}_dr"] = base["dr"]
        specs["dr_diff" if name == "baseline" and baseline is not None else f"{name}_dr_diff"] = diff
    return bootstrap_estimates(specs, n_boot=n_boot, seed=seed, alpha=alpha)


# --- the report -------------------------------------------------------------------------------------


def ope_table(ope: Mapping[str, Estimate], *, policy_name: str | None = None, alpha: float = 0.05) -> str:
    """Off-policy estimates as aligned text (`alpha` as given to `off_policy_evaluation`)."""
    if not ope:
        return "Off-policy estimates: no logged offers with features and propensities to estimate from."
    n = max(e.n for e in ope.values())
    title = f"Off-policy estimates{f' for {policy_name}' if policy_name else ''} from {n:,} logged decisions"
    header = ["estimator", "value/decision", f"{1 - alpha:.0%} CI", "effective n"]
    labels = {
        "logged": "logged (as sent)",
        "ips": "IPS",
        "snips": "self-normalised IPS",
        "dm": "direct (reward model)",
        "dr": "doubly robust",
    }
    body = [
        [
            labels.get(key, key),
            f"{e.value:.4f}",
            f"[{e.lower:.4f}, {e.upper:.4f}]",
            f"{e.effective_sample_size:,.0f}",
        ]
        for key, e in ope.items()
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    for line in body:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        )
    return "\n".join(lines)


def evaluation_report(
    truth_eval: Any | None,
    ope: Mapping[str, Estimate] | None,
    *,
    policy_name: str | None = None,
    alpha: float = 0.05,
) -> str:
    """What `recsys evaluate` prints: the truth table where a truth exists (a
    `recsys.benchmark.truth_eval.TruthEvaluation`, anything with `table()`), then the off-policy estimates."""
    parts = []
    if truth_eval is not None:
        parts.append(truth_eval.table())
    else:
        parts.append("Against the ground truth: no truth file (real data); see the off-policy estimates.")
    if ope is not None:
        parts.append(ope_table(ope, policy_name=policy_name, alpha=alpha))
    return "\n\n".join(parts)


__all__ = [
    "USER_CHUNK",
    "Estimate",
    "LoggedOffers",
    "bootstrap_sums",
    "checked_probabilities",
    "direct_method",
    "doubly_robust",
    "evaluation_report",
    "ips",
    "load_logged_offers",
    "load_logged_sample",
    "off_policy_evaluation",
    "on_policy_mean",
    "ope_table",
    "percentile_interval",
    "snips",
    "target_probabilities",
]
