"""How good is a policy, from logs: off-policy estimates, used by `recsys evaluate` and the gate.

(Against the generator's hidden truth, where one exists, is the benchmark's business:
`recsys.benchmark.truth_eval`, which uses the bootstrap helpers below.)

- **Off-policy, from logged offers** (`off_policy_evaluation`), the real-world case: inverse
  propensity scoring (IPS), self-normalised IPS and doubly robust estimates of a policy's value per
  logged decision, from `recsys.v_logged_offers` (the features the system had when it decided, the
  logged propensity, the outcome), each with a percentile bootstrap confidence interval. The
  estimators (`ips`, `snips`, `doubly_robust`) are pure functions on arrays.

`evaluation_report` renders the estimates (and a truth table, when given one) for the command line.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from psycopg2 import sql

from recsys.config.catalog import Catalog
from recsys.config.settings import package_dir
from recsys.db import Connection
from recsys.db.sqlfiles import load_sql
from recsys.model.baselines import Policy
from recsys.model.observation import FEATURE_NAMES, N_FEATURES, normalise

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


# Cells (replicates x rows) of one bootstrap block: about 32 MB of resample counts.
_BOOT_CELLS = 4_000_000
USER_CHUNK = 16_384
_PROB_TOLERANCE = 1e-6


# --- the policy probabilities, checked ----------------------------------------------------------


def checked_probabilities(policy: Policy, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`policy.probabilities(obs, mask)`, refused unless it keeps the protocol: shape (n, n_actions),
    no probability on a disallowed action, rows summing to 1 (0 where nothing is allowed).

    A policy that broke it would be valued on offers it could never send.
    """
    probs = np.asarray(policy.probabilities(obs, mask), dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if probs.shape != mask.shape:
        raise ValueError(f"policy {policy.name!r}: probabilities have shape {probs.shape}, mask {mask.shape}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError(f"policy {policy.name!r}: probabilities must be finite and >= 0")
    leaked = (probs > 0) & ~mask
    if leaked.any():
        row, action = np.argwhere(leaked)[0]
        raise ValueError(
            f"policy {policy.name!r}: row {row} gives probability {probs[row, action]:.3g} to action {action}, "
            "which the mask does not allow"
        )
    sums = probs.sum(axis=1)
    expected = mask.any(axis=1).astype(np.float64)
    bad = np.abs(sums - expected) > _PROB_TOLERANCE
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(
            f"policy {policy.name!r}: row {row} probabilities sum to {sums[row]:.6f}, not {expected[row]:g}"
        )
    return probs


# --- the bootstrap --------------------------------------------------------------------------------


def bootstrap_sums(columns: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Sums of each column (k, n) over `n_boot` resamples of its n rows with replacement: (n_boot, k).

    Every column uses the same resampled rows. Vectorised by blocks of replicates: each block draws
    an index matrix, turns it into resample counts per row, and sums with one matrix product.
    """
    k, n = columns.shape
    out = np.empty((n_boot, k), dtype=np.float64)
    block = max(1, _BOOT_CELLS // max(n, 1))
    for lo in range(0, n_boot, block):
        b = min(block, n_boot - lo)
        idx = rng.integers(0, n, size=(b, n))
        flat = (idx + (np.arange(b) * n)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        out[lo : lo + b] = counts @ columns.T
    return out


def percentile_interval(replicates: np.ndarray, alpha: float) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if len(finite) == 0:
        return math.nan, math.nan
    lower, upper = np.quantile(finite, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lower), float(upper)


# --- off-policy estimators --------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate with its percentile bootstrap interval.

    `effective_sample_size` is Kish's (sum w)^2 / sum w^2 of the importance weights: how many
    logged decisions the estimate is really worth (n for an on-policy mean).
    """

    value: float
    lower: float
    upper: float
    n: int
    effective_sample_size: float

    def to_dict(self) -> dict[str, float | int | None]:
        def num(x: float) -> float | None:
            return None if not math.isfinite(x) else float(x)

        return {
            "value": num(self.value),
            "lower": num(self.lower),
            "upper": num(self.upper),
            "n": int(self.n),
            "effective_sample_size": num(self.effective_sample_size),
        }


def _array(name: str, values: np.ndarray, n: int | None) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if n is not None and len(a) != n:
        raise ValueError(f"{name} has {len(a)} entries, rewards has {n}")
    if not np.isfinite(a).all():
        row = int(np.argmin(np.isfinite(a)))
        raise ValueError(f"{name}[{row}] is {a[row]}: every value must be finite")
    return a


def _weights(
    rewards: np.ndarray, target_prob_of_logged: np.ndarray, logged_propensity: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r = _array("rewards", rewards, None)
    if len(r) == 0:
        raise ValueError("no logged decisions to estimate from (rewards is empty)")
    p = _array("target_prob_of_logged", target_prob_of_logged, len(r))
    q = _array("logged_propensity", logged_propensity, len(r))
    if (p < 0).any() or (p > 1).any():
        row = int(np.argmax((p < 0) | (p > 1)))
        raise ValueError(f"target_prob_of_logged[{row}] = {p[row]}: probabilities lie in [0, 1]")
    if (q <= 0).any() or (q > 1).any():
        row = int(np.argmax((q <= 0) | (q > 1)))
        raise ValueError(f"logged_propensity[{row}] = {q[row]}: logged propensities lie in (0, 1]")
    return r, p / q


def _kish(w: np.ndarray) -> float:
    sq = float(np.dot(w, w))
    return float(w.sum()) ** 2 / sq if sq > 0 else 0.0


_Spec = tuple[np.ndarray, np.ndarray | None, float]
"""An estimate as sum(numerator) / sum(denominator) (None: / n) and its effective sample size."""


def _estimates(specs: Mapping[str, _Spec], *, n_boot: int, seed: int, alpha: float) -> dict[str, Estimate]:
    """Point estimates and percentile intervals of several ratio estimators over the same rows.

    All share one set of bootstrap resamples (they depend only on n, n_boot and seed), so computing
    estimators together or one at a time gives the same intervals, and their differences are paired.
    """
    n = len(next(iter(specs.values()))[0])
    ones = np.ones(n)
    columns: list[np.ndarray] = []
    slots: dict[str, tuple[int, int]] = {}
    for name, (numerator, denominator, _) in specs.items():
        columns.append(numerator)
        columns.append(ones if denominator is None else denominator)
        slots[name] = (len(columns) - 2, len(columns) - 1)
    totals = [float(c.sum()) for c in columns]
    sums = bootstrap_sums(np.vstack(columns), n_boot, np.random.default_rng(seed)) if n_boot > 0 else None
    out = {}
    for name, (num, den) in slots.items():
        value = totals[num] / totals[den] if totals[den] > 0 else math.nan
        lower = upper = math.nan
        if sums is not None and math.isfinite(value):
            with np.errstate(divide="ignore", invalid="ignore"):
                replicates = np.where(sums[:, den] > 0, sums[:, num] / sums[:, den], np.nan)
            lower, upper = percentile_interval(replicates, alpha)
        out[name] = Estimate(value=value, lower=lower, upper=upper, n=n, effective_sample_size=specs[name][2])
    return out


def _ratio_estimate(
    numerator: np.ndarray, denominator: np.ndarray | None, ess: float, *, n_boot: int, seed: int, alpha: float
) -> Estimate:
    return _estimates({"x": (numerator, denominator, ess)}, n_boot=n_boot, seed=seed, alpha=alpha)["x"]


def ips(
    rewards: np.ndarray,
    target_prob_of_logged: np.ndarray,
    logged_propensity: np.ndarray,
    *,
    n_boot: int = 500,
    seed: int = 0,
    alpha: float = 0.05,
) -> Estimate:
    """Inverse propensity scoring: mean of w r with w = target probability / logged propensity.

    Unbiased when the logged propensities are exact and the logging policy gives every action the
    target can take a positive probability; its variance grows with the weights.
    """
    r, w = _weights(rewards, target_prob_of_logged, logged_propensity)
    return _ratio_estimate(w * r, None, _kish(w), n_boot=n_boot, seed=seed, alpha=alpha)


def snips(
    rewards: np.ndarray,
    target_prob_of_logged: np.ndarray,
    logged_propensity: np.ndarray,
    *,
    n_boot: int = 500,
    seed: int = 0,
    alpha: float = 0.05,
) -> Estimate:
    """Self-normalised IPS: sum(w r) / sum(w). Slightly biased (O(1/n)), lower variance than IPS,
    and unchanged when every propensity is off by the same factor. NaN when no weight is positive.
    """
    r, w = _weights(rewards, target_prob_of_logged, logged_propensity)
    return _ratio_estimate(w * r, w, _kish(w), n_boot=n_boot, seed=seed, alpha=alpha)


def doubly_robust(
    rewards: np.ndarray,
    target_prob_of_logged: np.ndarray,
    logged_propensity: np.ndarray,
    q_logged: np.ndarray,
    q_target: np.ndarray,
    *,
    n_boot: int = 500,
    seed: int = 0,
    alpha: float = 0.05,
) -> Estimate:
    """Doubly robust: mean of q_target + w (r - q_logged).

    q_logged = the reward model's estimate for the logged action, q_target = E_{a ~ target}[q(x, a)].
    Unbiased when either the propensities or the reward model are right; with a good reward model
    its variance is far below IPS's (the weights only carry the model's residuals).
    """
    r, w = _weights(rewards, target_prob_of_logged, logged_propensity)
    ql = _array("q_logged", q_logged, len(r))
    qt = _array("q_target", q_target, len(r))
    return _ratio_estimate(qt + w * (r - ql), None, _kish(w), n_boot=n_boot, seed=seed, alpha=alpha)


def on_policy_mean(rewards: np.ndarray, *, n_boot: int = 500, seed: int = 0, alpha: float = 0.05) -> Estimate:
    """The plain mean reward (the logging policy's own value), with its bootstrap interval."""
    r = _array("rewards", rewards, None)
    if len(r) == 0:
        raise ValueError("no logged decisions to estimate from (rewards is empty)")
    return _ratio_estimate(r, None, float(len(r)), n_boot=n_boot, seed=seed, alpha=alpha)


def direct_method(q_target: np.ndarray, *, n_boot: int = 500, seed: int = 0, alpha: float = 0.05) -> Estimate:
    """The reward model's own answer: mean of q_target over the logged contexts (no logged rewards)."""
    q = _array("q_target", q_target, None)
    if len(q) == 0:
        raise ValueError("no logged decisions to estimate from (q_target is empty)")
    return _ratio_estimate(q, None, float(len(q)), n_boot=n_boot, seed=seed, alpha=alpha)


# --- logged offers ----------------------------------------------------------------------------------

# The view carries every observation feature but purchase_count (and no consent, see below); that one
# comes from the same point-in-time row of recsys.user_features the view joins.
_FROM_FEATURES_TABLE = ("purchase_count",)
_OUTCOME_COLUMNS = (
    "offer_id",
    "source",
    "user_id",
    "sent_at",
    "features_as_of",
    "offer_type",
    "offer_value",
    "channel",
    "timing",
    "propensity",
    "opened",
    "clicked",
    "converted",
    "revenue",
    "unsubscribed",
)


def _sql(name: str) -> str:
    """The text of sql/evaluation/<name>.sql."""
    return load_sql(package_dir("sql"), f"evaluation/{name}")


@dataclass(frozen=True)
class LoggedOffers:
    """Logged decisions ready for off-policy evaluation, one row each, in (date, offer id) order.

    `rows` is the view's decision and outcome columns, the raw features, and `action_id` (the
    catalog action of the logged offer, -1 when the catalog has no such offer: no policy on this
    catalog can choose it, so its target probability is 0).
    """

    rows: pd.DataFrame
    obs: np.ndarray  # float32 (n, N_FEATURES), built exactly like recsys.model.observation
    mask: np.ndarray  # bool (n, n_actions): the actions each user can receive (current consent)
    action_ids: np.ndarray  # int64 (n,)
    propensity: np.ndarray  # float64 (n,): the logging policy's probability of the logged offer
    skipped: dict[str, int] = field(default_factory=dict)
    """Logged offers in the window left out, by reason: no features for the day, unknown propensity."""

    def __len__(self) -> int:
        return len(self.action_ids)


def load_logged_offers(
    conn: Connection, catalog: Catalog, *, since: dt.date | None = None, until: dt.date | None = None
) -> LoggedOffers:
    """Logged offers from `recsys.v_logged_offers` with since <= features_as_of < until (None: open).

    Only decisions with the system's features of that day (`has_features`) and a known propensity
    can be used. The observation is built from the view's point-in-time feature columns exactly as
    `recsys.data.states.load_states` builds it from `recsys.user_features`. The view has no consent
    history, so the consent flags of the observation and the allowed-actions mask use the users'
    *current* consent (`recsys.users`): a user who unsubscribed since counts as never reachable on
    that channel, so the target policy cannot send there either (both sides of the estimate see the
    same users; it is not the consent the logging policy saw).
    """
    feature_cols = [
        sql.SQL("f.{} as {}").format(sql.Identifier(c), sql.Identifier(c))
        if c in _FROM_FEATURES_TABLE
        else sql.SQL("v.{}").format(sql.Identifier(c))
        for c in FEATURE_NAMES[:-3]
    ]
    columns = sql.SQL(", ").join([sql.SQL("v.{}").format(sql.Identifier(c)) for c in _OUTCOME_COLUMNS] + feature_cols)
    params = {"since": since, "until": until}
    with conn.cursor() as cur:
        select = cur.mogrify(sql.SQL(_sql("logged_offers")).format(columns=columns), params).decode()
        buffer = io.StringIO()
        # The join over every feature partition looks expensive to the planner, which then spends
        # seconds JIT-compiling a query that runs in about as long without it; off for this query only.
        cur.execute("select current_setting('jit'), set_config('jit', 'off', true)")
        jit = cur.fetchone()[0]
        cur.copy_expert(f"copy ({select}) to stdout with (format csv, header)", buffer)
        cur.execute("select set_config('jit', %s, true)", (jit,))
        cur.execute(_sql("logged_offers_skipped"), params)
        no_features, no_propensity = cur.fetchone()
    buffer.seek(0)
    rows = _read_logged_rows(buffer, catalog)

    raw = (
        np.column_stack(
            [rows[c].to_numpy(dtype=np.float64) for c in FEATURE_NAMES[:-3]]
            + [rows[f"{c}_consent"].to_numpy(dtype=np.float64, na_value=0.0) for c in ("email", "sms", "push")]
        )
        if len(rows)
        else np.zeros((0, N_FEATURES))
    )
    channel_ok = (
        np.column_stack([rows[f"{c}_ok"].to_numpy(dtype=bool, na_value=False) for c in ("email", "sms", "push")])
        if len(rows)
        else np.zeros((0, 3), dtype=bool)
    )
    rows = rows.drop(columns=[f"{c}_ok" for c in ("email", "sms", "push")])
    channel_index = {"email": 0, "sms": 1, "push": 2}
    mask = channel_ok[:, [channel_index[a.channel] for a in catalog.actions]]
    unknown = int((rows["action_id"] < 0).sum())
    if unknown:
        log.info("%d logged offers are not in the catalog: no policy on it can choose them (weight 0)", unknown)
    return LoggedOffers(
        rows=rows,
        obs=normalise(raw),
        mask=mask,
        action_ids=rows["action_id"].to_numpy(dtype=np.int64),
        propensity=rows["propensity"].to_numpy(dtype=np.float64),
        skipped={"no_features": int(no_features), "no_propensity": int(no_propensity)},
    )


def _read_logged_rows(buffer: io.StringIO, catalog: Catalog) -> pd.DataFrame:
    """The CSV of sql/evaluation/logged_offers.sql as a DataFrame with typed columns and the
    catalog's `action_id` of each logged offer (-1: not in the catalog)."""
    import pandas as pd

    booleans = (
        "opened",
        "clicked",
        "converted",
        "unsubscribed",
        *(f"{c}_{s}" for s in ("consent", "ok") for c in ("email", "sms", "push")),
    )
    rows = pd.read_csv(
        buffer,
        dtype={"offer_id": str, "source": str, "offer_type": str, "channel": str, "timing": str}
        | {c: "boolean" for c in booleans},
        true_values=["t"],
        false_values=["f"],
        keep_default_na=False,
        na_values=[""],
    )
    rows["sent_at"] = pd.to_datetime(rows["sent_at"], utc=True, format="ISO8601")
    rows["features_as_of"] = pd.to_datetime(rows["features_as_of"]).dt.date
    actions = pd.DataFrame(
        [(a.offer_type, float(a.value), a.channel, a.timing, a.action_id) for a in catalog.actions],
        columns=["offer_type", "offer_value", "channel", "timing", "action_id"],
    )
    keys = ["offer_type", "offer_value", "channel", "timing"]
    rows["offer_value"] = rows["offer_value"].astype(np.float64)
    rows = rows.merge(actions, on=keys, how="left", validate="many_to_one")
    rows["action_id"] = rows["action_id"].fillna(-1).astype(np.int64)
    return rows


def target_probabilities(policy: Policy, logs: LoggedOffers, *, chunk: int = 65_536) -> np.ndarray:
    """The policy's probability of each logged action in its logged context (0 for off-catalog offers)."""
    out = np.zeros(len(logs), dtype=np.float64)
    for lo in range(0, len(logs), chunk):
        sl = slice(lo, lo + chunk)
        probs = checked_probabilities(policy, logs.obs[sl], logs.mask[sl])
        a = logs.action_ids[sl]
        known = a >= 0
        out[sl][known] = probs[np.flatnonzero(known), a[known]]
    return out


def _reward_model_terms(
    policy: Policy, logs: LoggedOffers, q_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], chunk: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    """q(x, logged action) (0 where off-catalog: its weight is 0) and E_{a ~ policy}[q(x, a)]."""
    n = len(logs)
    q_logged = np.zeros(n)
    q_target = np.zeros(n)
    for lo in range(0, n, chunk):
        sl = slice(lo, lo + chunk)
        obs = logs.obs[sl]
        a = logs.action_ids[sl]
        known = np.flatnonzero(a >= 0)
        if len(known):
            q_logged[lo + known] = np.asarray(q_fn(obs[known], a[known]), dtype=np.float64)
        probs = checked_probabilities(policy, obs, logs.mask[sl])
        for action in np.flatnonzero(probs.max(axis=0) > 0):
            rows = np.flatnonzero(probs[:, action] > 0)
            q = np.asarray(q_fn(obs[rows], np.full(len(rows), action, dtype=np.int64)), dtype=np.float64)
            q_target[lo + rows] += probs[rows, action] * q
    return q_logged, q_target


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
    logs: LoggedOffers | None = None,
    baseline: Policy | None = None,
) -> dict[str, Estimate]:
    """Estimates of `policy`'s mean value per logged decision, from `recsys.v_logged_offers`.

    `reward_fn(rows)` turns the logged rows (`LoggedOffers.rows`, a DataFrame with the outcome
    columns converted / revenue / channel / ...) into the realised net value of each decision.
    `q_fn(obs, action_ids)` is a reward model's expected reward; without it the doubly robust
    and direct-method estimates are skipped. Keys: "logged" (the logging policy's own mean reward),
    "ips", "snips", and with `q_fn` "dm" and "dr". Empty when no logged decision can be used.
    Every estimate uses the same bootstrap resamples (`seed`). Pass `logs` (from
    `load_logged_offers`) to evaluate several policies on one read of the view. With `baseline` and
    `q_fn`, "baseline_dr" is the baseline's own doubly robust estimate and "dr_diff" the paired
    difference policy - baseline: both are computed on
    the same rows and resamples, so what they share (the logged rewards, the reward model's error)
    cancels and the interval is that of the difference, much narrower than two separate intervals.
    """
    if logs is None:
        logs = load_logged_offers(conn, catalog, since=since, until=until)
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
    target = target_probabilities(policy, logs)
    # The same checks and formulas as ips / snips / doubly_robust, bootstrapped together.
    r, w = _weights(rewards, target, logs.propensity)
    kish = _kish(w)
    specs: dict[str, _Spec] = {
        "logged": (r, None, float(len(r))),
        "ips": (w * r, None, kish),
        "snips": (w * r, w, kish),
    }
    if q_fn is not None:
        q_logged, q_target = _reward_model_terms(policy, logs, q_fn)
        q_logged = _array("q_logged", q_logged, len(r))
        q_target = _array("q_target", q_target, len(r))
        specs["dm"] = (q_target, None, float(len(r)))
        specs["dr"] = (q_target + w * (r - q_logged), None, kish)
        if baseline is not None:
            w_base = _weights(rewards, target_probabilities(baseline, logs), logs.propensity)[1]
            q_base = _array("q_target", _reward_model_terms(baseline, logs, q_fn)[1], len(r))
            dr_base = q_base + w_base * (r - q_logged)
            specs["baseline_dr"] = (dr_base, None, _kish(w_base))
            specs["dr_diff"] = (specs["dr"][0] - dr_base, None, min(kish, _kish(w_base)))
    return _estimates(specs, n_boot=n_boot, seed=seed, alpha=alpha)


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
