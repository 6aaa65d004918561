"""How the system learns and what it takes to ship a model: the `[learning]` and `[gate]` sections
of recsys/config.toml as frozen dataclasses.

`FitConfig` holds the response model's fit (its priors' strength, the bounded sample of the logs
it reads, the held-out report); `GateConfig` the promotion gate's thresholds
(`recsys.evaluation.gate`). Both are part of the product configuration (`recsys.config.Config`:
`learning`, `gate`), so an ML engineer changes them in the shop's file, as the catalog and the
reward rules, and every stage that fits or gates reads the same values. A key that is not a field,
or a value of the wrong type or out of range, is a ConfigError naming the file, the section and the
key. Every field has a default: a file without the sections runs as the defaults below say.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from recsys.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class FitConfig:
    """Hyperparameters of `fit_response_model`."""

    l2_main: float = 10.0
    """Precision of the Gaussian prior on main effects (w, gamma), centred on the business rules."""
    l2_interaction: float = 30.0
    """Precision of the prior on feature x attribute interactions (many, so held closer to the rules)."""
    l2_prior_shrunk: float = 10.0
    """Precision of the prior (centred on 0) on the terms of the prior-shrunk features
    (`recsys.model.response_terms.PRIOR_SHRUNK_TERMS`): dozens of slopes of features that are already
    posterior means, so each moves only where the offers say so. 10 rather than the 100 first
    shipped: on the policy benchmark's shops the fit's held-out log loss of every stage is lower
    and greedy on the model worth more (`bench/bench_fit_priors.py`, docs/decision-quality.md)."""
    max_iter: int = 50
    """Newton steps per head, at most (each on the whole sample; a head converges in a handful)."""
    tolerance: float = 1e-9
    """A head's fit stops when its objective (the weighted log-loss per offer, with the prior) is
    within this of its minimum, by the Newton decrement (half of gradient x Newton step)."""
    order_value_l2: float = 20.0
    """Ridge precision of the log order value's deviation from the user's basket."""
    order_value_prior_sd: float = 0.5
    """Prior log-scale spread of one order around its expectation."""
    order_value_prior_weight: float = 20.0
    """How many conversions the prior spread counts as (it is pooled with the residual spread)."""
    log_window_days: int | None = 365
    """Learn from the offers sent in this many days before as_of (None: all). Within the feature
    retention (400 days by default), so no dropped feature date is rebuilt night after night."""
    max_offers: int | None = 300_000
    """Bound on the offers a night's fit learns from, so that its cost stays flat as the logs grow
    (None: no bound). Over it, every offer sent in the last `recent_days` days is kept and the older
    ones are a uniform random sample (by `seed`) that fills the bound, each weighted by the inverse of
    its sampling rate: the weighted objective is an unbiased estimate of the objective on all the
    logs. Measured: a fit costs about linear time in its rows (docs/performance.md)."""
    recent_days: int = 7
    """The days before as_of whose offers a bounded fit always keeps whole: the system's own latest
    outcomes are what the night's model most needs to learn from."""
    max_users: int | None = 100_000
    """Bound on the users a night's training and evaluation read (their states, as of the night):
    over it, a uniform sample of about this many, drawn by a hash of the user id with the night's
    seed (None: every user). PPO's simulator, the warm start, the gate's simulator values, the
    model evidence's refits, the horizon simulation and `recsys evaluate`'s simulator values all
    compute on every user they read (each a users x actions matrix or more), so their memory and
    time stay flat from this size on; scoring still reads and scores everyone. Measured: the 1M-user
    night's peak memory (docs/performance.md)."""
    calibration_bins: int = 10
    """Bins (equal counts, by predicted probability) of the reliability table."""
    min_holdout_users: int = 1
    """Fewer users than this in the holdout: no held-out report."""
    refit_on_all: bool = True
    """After the held-out report, refit every head on all the sample's users (warm-started from the
    training users' fit) and return that model: the held-out users validate the fit, and their
    offers still teach the night's model. False: the returned model is the training users' fit."""

    def __post_init__(self) -> None:
        for name in (
            "l2_main",
            "l2_interaction",
            "l2_prior_shrunk",
            "order_value_l2",
            "order_value_prior_sd",
            "order_value_prior_weight",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"tolerance must be in (0, 1), got {self.tolerance!r}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.log_window_days is not None and self.log_window_days < 1:
            raise ValueError(f"log_window_days must be >= 1 (or unset: all), got {self.log_window_days}")
        if self.max_offers is not None and self.max_offers < 1:
            raise ValueError(f"max_offers must be >= 1 (or unset: no bound), got {self.max_offers}")
        if self.recent_days < 0:
            raise ValueError(f"recent_days must be >= 0, got {self.recent_days}")
        if self.max_users is not None and self.max_users < 1:
            raise ValueError(f"max_users must be >= 1 (or unset: every user), got {self.max_users}")
        if self.calibration_bins < 1:
            raise ValueError(f"calibration_bins must be >= 1, got {self.calibration_bins}")


@dataclass(frozen=True)
class GateConfig:
    """Promotion thresholds."""

    margin: float = 0.02
    """Relative tolerance: a challenger may be this much worse than the champion and still win."""
    min_effective_sample_size: float = 1_000.0
    """The off-policy check against random needs the challenger's doubly robust estimate to rest on
    at least this many logged decisions (Kish's effective sample size of its importance weights).
    A near-deterministic policy matches few logged offers; when those few happen to hold no
    conversion, the percentile bootstrap cannot resample the conversions they did not show and its
    interval is falsely tight (measured: a first model worth 2x random under the truth came out at
    -0.012 [-0.041, +0.007] against random's +0.014 on 24,497 logged offers, effective sample 226.5)."""
    require_evidence_over_baseline: bool = True
    """Promote only on evidence that the challenger beats the conservative baseline (the rule
    heuristic) on the logs: the lower end of the paired doubly robust difference challenger - rule
    above 0, on an effective sample of at least `min_effective_sample_size`. Without that evidence
    the champion stays, so a new shop never ships a model below the rule (issue 12 measured a first
    PPO champion of the 2,000-user demo shop at 0.080 normalised under the truth, the rule at 0.121).
    The price is measured too: on the demo of 2026-12-04 the first PPO model was worth 0.235 and the
    rule 0.119, but its paired difference on the shop's logs rested on an effective 108 decisions,
    +0.135 [-0.043, +0.355]: no evidence, so the rule stays champion until the system's own logs
    accumulate. False records the comparison without letting it decide (tests and benchmarks that
    need a trained champion on a few synthetic nights). The model-based path (`model_evidence_*`)
    is the other way to earn the promotion."""
    model_evidence_refits: int = 16
    """Evidence path b: refits of the response model, each on a resample (with replacement) of the
    users its night's fit trained on, under which the challenger and the baseline are revalued (0:
    no refits, path b never passes: the logs-only gate). Each refit starts from the night's
    coefficients. Counted only from `model_evidence_min_offers` training offers. Cost measured on a
    loaded 2-core machine, before the warm start: 2 to 9 s per night on the 2,000-user demo shop,
    74 to 144 s at 20,000 users x 90 days (the night's fit 37 s)."""
    model_evidence_min_offers: int = 15_000
    """Path b counts only when the night's fit trained on at least this many logged offers; below,
    it is recorded as failed with the count, and no refits are run. Measured (docs/decision-quality.md):
    on the 2,000-user demo shop (about 8,000 to 11,000 training offers) the refits promoted PPO on
    7 seeds of 7, two of them worse than the rule under the truth (0.051 vs 0.104, 0.095 vs 0.122):
    the model's values there were two to six times the truth's, a bias the refits cannot see and
    the logs' veto, on an effective 80 to 108 decisions, could not catch. On 5,000-user shops
    (about 19,500 training offers on the first night, growing) path b promoted PPO on 3 seeds of 3
    (from night 1 on two of them, night 5 on the third), and over 30 simulated nights it was
    worth +0.0024 to +0.0030 per user-night over the rule under the truth (every paired interval
    above 0); at 20,000 users x 90 days (129,186
    training offers) 0.340 / 0.351 / 0.246 against the rule's 0.128 / 0.130 / 0.141. The threshold
    lies between the largest size measured unsafe and the smallest measured safe; 0 counts path b
    on any shop."""
    model_evidence_max_offers: int = 100_000
    """Each refit draws about this many training offers at most (fewer users, each weighted up, so
    the data keep their weight against the prior; `BootstrapSample.refits`): a fit's time is about
    linear in its rows (docs/performance.md), so 16 refits cost at most about 16 fits of this
    size however large the shop. The refits' spread is then that of the smaller fit, wider than
    the night's own: path b gets stricter on a large shop, never looser."""
    model_evidence_quantile: float = 0.05
    """Path b passes when this lower quantile of the refits' differences challenger - baseline
    (mean expected reward per user of the greedy offers on tonight's users) is above 0, and the
    logs, when there are any, do not contradict it (the paired doubly robust difference's upper end
    >= 0). The refits measure the fit's estimation uncertainty, not the error of its structure."""
    off_policy_max_decisions: int | None = 200_000
    """The off-policy checks read a uniform sample of at most this many logged decisions (None: all
    of them), the same sample for the challenger, the champion, the rule heuristic and random, so
    that the gate's cost stays flat as the logs grow; the bootstrap intervals include the
    sampling. `recsys evaluate` reads a sample of the same size."""
    horizon_nights: int = 7
    """With the rest in the catalog, the rests are judged over this many nights in the simulator
    (the training environment's horizon, `TrainConfig.horizon`): one night values a rest at 0,
    below any offer worth anything, and cannot see what it saves on the nights after."""
    horizon_users: int = 20_000
    """At most this many of tonight's users (a uniform sample) are followed over the horizon, under
    each policy with the same draws; the intervals are over them. Cost measured on a loaded 2-core
    machine (bench/bench_horizon.py, toy PPO networks): 2.3 to 4.1 s a night for 20,000 users x 7
    nights x 4 policies (three of them PPO networks); the paired interval of challenger - champion
    was then +-0.0011 to +-0.0026 per user-night."""

    def __post_init__(self) -> None:
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.min_effective_sample_size < 0:
            raise ValueError(f"min_effective_sample_size must be >= 0, got {self.min_effective_sample_size}")
        if self.model_evidence_refits < 0:
            raise ValueError(f"model_evidence_refits must be >= 0, got {self.model_evidence_refits}")
        if self.model_evidence_min_offers < 0:
            raise ValueError(f"model_evidence_min_offers must be >= 0, got {self.model_evidence_min_offers}")
        if self.model_evidence_max_offers < 1:
            raise ValueError(f"model_evidence_max_offers must be >= 1, got {self.model_evidence_max_offers}")
        if self.off_policy_max_decisions is not None and self.off_policy_max_decisions < 1:
            raise ValueError(
                f"off_policy_max_decisions must be >= 1 (or unset: all), got {self.off_policy_max_decisions}"
            )
        if self.horizon_nights < 1 or self.horizon_users < 1:
            raise ValueError(
                f"horizon_nights and horizon_users must be >= 1, got {self.horizon_nights}, {self.horizon_users}"
            )
        if not 0.0 < self.model_evidence_quantile < 0.5:
            raise ValueError(f"model_evidence_quantile must be in (0, 0.5), got {self.model_evidence_quantile}")


def parse_section(cls: type[T], data: dict[str, Any], section: str, source: Path) -> T:
    """`cls` (a dataclass of int / float / bool fields, some optional) from `[section]` of the file
    read from `source`, every field absent from it at its default."""
    values = data.get(section, {})
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: [{section}] must be a table of settings, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{source}: [{section}] has no setting {', '.join(unknown)} (settings: {', '.join(names)})")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        kwargs[key] = _typed(value, hints[key], f"{source}: [{section}] {key}")
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ConfigError(f"{source}: [{section}] {e}") from e


def _typed(value: Any, hint: Any, where: str) -> Any:
    """`value` as the field's type: bool, int, float (an int is accepted), or one of them or None
    (TOML has no null: an optional field is unset with the string "none")."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if optional and isinstance(value, str) and value.strip().lower() == "none":
        return None
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        unset = ' or "none"' if optional else ""
        raise ConfigError(f"{where} must be a whole number{unset}, got {value!r}")
    if base is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    raise ConfigError(f"{where}: unsupported setting type {hint!r}")
