"""The latent traits of the synthetic users, and how they are drawn.

Traits (one draw per user; every constant is a field of `SynthParams`)
-----------------------------------------------------------------------
- discount sensitivity, free-shipping preference, recommendation affinity: Beta(2, 3) each (mean
  0.4); bundle affinity: Beta(1.8, 3.2). Independent, so each offer type is somebody's favourite.
- channel responsiveness (email, sms, push) = open rate at the preferred hour without fatigue
  = sigmoid(open_rate_logit_c + z_c), logits (-1.3, 0.3, -1.9), z ~ N(0, 1.0^2) per channel with
  correlation 0.25; median open rates 21% (email), 57% (sms), 13% (push).
- preferred hour (local time): a mixture of N(8.5, 1.2^2), N(12.5, 1.2^2), N(19.5, 1.2^2) with
  weights 0.30 / 0.25 / 0.45, wrapped to [0, 24).
- category affinities over 8 categories: Dirichlet(3.0 x popularity), popularity (0.16, 0.18, 0.15,
  0.12, 0.11, 0.08, 0.10, 0.10); focus = (max affinity - 1/8) / (1 - 1/8) in [0, 1].
- activity rate (organic sessions per day): log-normal, median 0.055, log-sd 0.9 (mean 0.082).
- basket size (the user's mean order value): log-normal, median 42, log-sd 0.5; one order is that
  mean times a log-normal factor with mean 1 and log-sd 0.45.
- fatigue: Gamma(shape 2, scale 0.15), mean 0.3.
- consent per channel: 12% of users consent to nothing; the others consent to channel c with
  probability sigmoid(consent_logit_c + 0.8 z_c), logits (1.2, -0.6, -0.1), so consent follows
  responsiveness. Unsubscribes during the simulated campaigns revoke consent; the truth file holds the
  consent at the end of the data (what the `users` sheet says).
- time zone (not latent, but needed for local send hours): one of TIMEZONES with weights
  `timezone_weights`.

Used by `recsys.benchmark.synth.truth` (which holds and stores the traits) and the generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.benchmark.synth.params import SynthParams


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


def link(p: SynthParams, logit: np.ndarray) -> np.ndarray:
    """A logit as a probability in the world's form: logistic, or probit for `shifted`."""
    return norm_cdf(logit / p.probit_scale) if p.world == "shifted" else sigmoid(logit)


def _correlated(rng: np.random.Generator, draws: np.ndarray, partner: np.ndarray, rho: float) -> np.ndarray:
    """`draws` reordered so that their ranks have Gaussian-copula correlation `rho` with `partner`'s
    (the marginal distribution is unchanged)."""
    z = (np.log(partner) - np.log(partner).mean()) / max(np.log(partner).std(), 1e-12)
    score = rho * z + np.sqrt(1.0 - rho * rho) * rng.standard_normal(len(draws))
    out = np.empty_like(draws)
    out[np.argsort(score, kind="stable")] = np.sort(draws, kind="stable")
    return out


@dataclass
class Traits:
    """Latent traits, one row per user (float64 arrays holding float32-exact values)."""

    discount_sensitivity: np.ndarray
    free_shipping_preference: np.ndarray
    recommendation_affinity: np.ndarray
    bundle_affinity: np.ndarray
    responsiveness: np.ndarray
    """(n, 3): open rate per channel of CHANNELS at the preferred hour, without fatigue."""
    preferred_hour: np.ndarray
    category_affinity: np.ndarray
    """(n, len(CATEGORIES)), rows sum to 1."""
    activity_rate: np.ndarray
    basket_mean: np.ndarray
    fatigue: np.ndarray

    @property
    def n(self) -> int:
        return len(self.fatigue)

    def focus(self) -> np.ndarray:
        """How concentrated the category affinity is: 0 = uniform, 1 = one category only."""
        k = self.category_affinity.shape[1]
        return (self.category_affinity.max(axis=1) - 1.0 / k) / (1.0 - 1.0 / k)

    def top_category(self) -> np.ndarray:
        return self.category_affinity.argmax(axis=1).astype(np.int8)


def _f32(x: np.ndarray) -> np.ndarray:
    """Round to float32 (what the truth file stores) and compute in float64."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def sample_traits(rng: np.random.Generator, n: int, params: SynthParams) -> tuple[Traits, np.ndarray]:
    """Draw the traits of `n` users and their initial consent (n, 3) bool, as documented in the module docstring."""
    p = params
    discount = rng.beta(*p.discount_sensitivity_beta, size=n)
    free_ship = rng.beta(*p.free_shipping_preference_beta, size=n)
    rec = rng.beta(*p.recommendation_affinity_beta, size=n)
    bundle = rng.beta(*p.bundle_affinity_beta, size=n)
    corr = np.full((3, 3), p.responsiveness_corr)
    np.fill_diagonal(corr, 1.0)
    chol = np.linalg.cholesky(corr * p.responsiveness_sd**2)
    z = rng.standard_normal((n, 3)) @ chol.T
    responsiveness = link(p, np.asarray(p.open_rate_logit) + z)
    group = rng.choice(3, size=n, p=np.asarray(p.preferred_hour_weights) / sum(p.preferred_hour_weights))
    hour = np.asarray(p.preferred_hour_modes)[group] + rng.normal(0.0, p.preferred_hour_sd, size=n)
    hour = np.mod(hour, 24.0)
    popularity = np.asarray(p.category_popularity) / sum(p.category_popularity)
    affinity = rng.dirichlet(p.category_concentration * popularity, size=n)
    # Dirichlet draws can underflow to exact zeros for tiny alphas; keep every category reachable.
    affinity = np.maximum(affinity, 1e-6)
    affinity = affinity / affinity.sum(axis=1, keepdims=True)
    activity = p.activity_median_per_day * np.exp(rng.normal(0.0, p.activity_log_sd, size=n))
    basket = p.basket_median * np.exp(rng.normal(0.0, p.basket_log_sd, size=n))
    fatigue = rng.gamma(p.fatigue_gamma[0], p.fatigue_gamma[1], size=n)
    none = rng.random(n) < p.no_consent_share
    consent = rng.random((n, 3)) < sigmoid(np.asarray(p.consent_logit) + p.consent_responsiveness_slope * z)
    consent &= ~none[:, None]
    if p.world == "shifted":  # drawn after the standard draws: the standard world's stream is unchanged
        rec_activity, discount_basket, bundle_basket = p.shifted_correlations
        rec = _correlated(rng, rec, activity, rec_activity)
        discount = _correlated(rng, discount, basket, discount_basket)
        bundle = _correlated(rng, bundle, basket, bundle_basket)
    traits = Traits(
        discount_sensitivity=_f32(discount),
        free_shipping_preference=_f32(free_ship),
        recommendation_affinity=_f32(rec),
        bundle_affinity=_f32(bundle),
        responsiveness=_f32(responsiveness),
        preferred_hour=_f32(hour),
        category_affinity=_f32(affinity),
        activity_rate=_f32(activity),
        basket_mean=_f32(basket),
        fatigue=_f32(fatigue),
    )
    return traits, consent
