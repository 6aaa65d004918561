"""Off-policy estimators and their bootstrap: pure functions on arrays, used by
`recsys.evaluation.ope` (estimates from the logged offers) and `recsys.benchmark.truth_eval`.

- `checked_probabilities`: a policy's action probabilities, refused unless they keep the protocol.
- `bootstrap_sums`, `percentile_interval`: the vectorised percentile bootstrap.
- `ips`, `snips`, `doubly_robust`, `on_policy_mean`, `direct_method`: one estimate each, with its
  interval; `estimator_specs` and `bootstrap_estimates` compute several on the same rows and
  resamples (what `recsys.evaluation.ope.off_policy_evaluation` does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from recsys.model.baselines import Policy

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


Spec = tuple[np.ndarray, np.ndarray | None, float]
"""An estimate as sum(numerator) / sum(denominator) (None: / n) and its effective sample size."""


def estimator_specs(
    rewards: np.ndarray,
    target_prob_of_logged: np.ndarray,
    logged_propensity: np.ndarray,
    q_logged: np.ndarray | None = None,
    q_target: np.ndarray | None = None,
) -> dict[str, Spec]:
    """Every estimator on the same logged decisions, as ratios for `bootstrap_estimates`, inputs checked.

    Keys: "logged" (the mean reward, the logging policy's own value), "ips", "snips", and with a
    reward model's `q_logged` (its estimate for the logged action) and `q_target` (its expectation
    under the target policy) "dm" and "dr". The formulas are those of the functions below.
    """
    r, w = _weights(rewards, target_prob_of_logged, logged_propensity)
    kish = _kish(w)
    specs: dict[str, Spec] = {
        "logged": (r, None, float(len(r))),
        "ips": (w * r, None, kish),
        "snips": (w * r, w, kish),
    }
    if q_logged is not None and q_target is not None:
        ql = _array("q_logged", q_logged, len(r))
        qt = _array("q_target", q_target, len(r))
        specs["dm"] = (qt, None, float(len(r)))
        specs["dr"] = (qt + w * (r - ql), None, kish)
    return specs


def bootstrap_estimates(specs: Mapping[str, Spec], *, n_boot: int, seed: int, alpha: float) -> dict[str, Estimate]:
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


def _one(name: str, specs: Mapping[str, Spec], *, n_boot: int, seed: int, alpha: float) -> Estimate:
    return bootstrap_estimates({name: specs[name]}, n_boot=n_boot, seed=seed, alpha=alpha)[name]


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
    specs = estimator_specs(rewards, target_prob_of_logged, logged_propensity)
    return _one("ips", specs, n_boot=n_boot, seed=seed, alpha=alpha)


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
    specs = estimator_specs(rewards, target_prob_of_logged, logged_propensity)
    return _one("snips", specs, n_boot=n_boot, seed=seed, alpha=alpha)


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
    specs = estimator_specs(rewards, target_prob_of_logged, logged_propensity, q_logged, q_target)
    return _one("dr", specs, n_boot=n_boot, seed=seed, alpha=alpha)


def on_policy_mean(rewards: np.ndarray, *, n_boot: int = 500, seed: int = 0, alpha: float = 0.05) -> Estimate:
    """The plain mean reward (the logging policy's own value), with its bootstrap interval."""
    r = _array("rewards", rewards, None)
    if len(r) == 0:
        raise ValueError("no logged decisions to estimate from (rewards is empty)")
    return _one("logged", {"logged": (r, None, float(len(r)))}, n_boot=n_boot, seed=seed, alpha=alpha)


def sample_mean(values: np.ndarray, *, population: int | None = None, z: float = 1.959964) -> Estimate:
    """The mean of per-user values over a uniform sample of `population` users (None: the values
    are every user's), with its normal interval for the population's mean: the standard error with
    the finite-population correction sqrt((N - n) / (N - 1)). Over every user the mean is the
    population's own and the interval has no width; a sample of a tenth of them keeps about 95% of
    the plain standard error."""
    v = _array("values", values, None)
    n = len(v)
    if n == 0:
        raise ValueError("no users to average over (values is empty)")
    if population is not None and population < n:
        raise ValueError(f"population ({population}) must be at least the sample's {n} users")
    mean = float(v.mean())
    population = n if population is None else population
    if n < 2 or population == n:
        return Estimate(mean, mean, mean, n, float(n))
    se = float(v.std(ddof=1)) / math.sqrt(n) * math.sqrt((population - n) / (population - 1))
    return Estimate(mean, mean - z * se, mean + z * se, n, float(n))


def direct_method(q_target: np.ndarray, *, n_boot: int = 500, seed: int = 0, alpha: float = 0.05) -> Estimate:
    """The reward model's own answer: mean of q_target over the logged contexts (no logged rewards)."""
    q = _array("q_target", q_target, None)
    if len(q) == 0:
        raise ValueError("no logged decisions to estimate from (q_target is empty)")
    return _one("dm", {"dm": (q, None, float(len(q)))}, n_boot=n_boot, seed=seed, alpha=alpha)
