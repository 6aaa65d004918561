"""The posterior ceiling: decisions from the generator's own posterior of each user's traits, given
only what the logs show.

The benchmark's ceiling row (`bench/bench_policy.py`, issue 12 item 5). It knows the generator's form
and priors (`recsys.benchmark.synth.traits`, `SynthParams`) but never the truth's traits: it reads the
database the product reads (behaviour events, the logged offers and their outcomes, the users' consent
and time zones, `sql/benchmark/posterior_*.sql`), computes each user's posterior, and values every
action as the posterior expectation of the generator's expected value (`GroundTruth.value_matrix` on
posterior draws of the traits). The truth only values the chosen actions, in the bench.

The posterior, per user, factorised where the generator's form allows it:
- category affinities: Dirichlet(concentration x popularity + product views per category), exact for
  organic views (the first view of an offer click's session is forced; those few are counted too);
- basket (mean order value): log-normal prior, organic orders log-normal around it with the known
  log-sd: a conjugate normal posterior of the log basket (purchases of converted offers taken out);
- activity: organic sessions ~ Poisson(rate x days), log-normal prior, on a grid;
- discount sensitivity, free-shipping, recommendation and bundle affinity: a grid on (0, 1) with the
  Beta prior; the likelihood of every opened offer's click and every click's conversion of that type,
  and for discount and free shipping the flags of organic purchases. Recommendation offers use the
  posterior mean focus (the coupling of affinity and focus through recommendation clicks is dropped);
- channel responsiveness z (3 channels, correlated), preferred hour and fatigue, jointly by importance
  sampling: particles from the prior of z and fatigue and from the hour's posterior given the organic
  session start hours (a grid), weighted by the opens of every logged offer (responsiveness x timing
  fit at its local send hour x exp(-fatigue x offers in the 7 nights before) x weekday), the channels
  that brought the organic sessions (newsletter shares and the app share rising with push
  responsiveness) and the consent on each channel (consent follows responsiveness).

Approximations: the groups above are independent a posteriori (the prior makes them independent; the
likelihood couples only focus with recommendation clicks, and hours with categories not at all);
unsubscribes are not observed (consent at the end of the data stands for the consent at each send and
session); the `shifted` world's copula correlations of the traits are not in the prior.

Called by `bench/bench_policy.py` and its tests; pure numpy over users (chunks, no per-user loops).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from recsys.benchmark.posterior_logs import SESSION_CHANNELS, Observed, load_observed
from recsys.benchmark.synth.params import SynthParams
from recsys.benchmark.synth.traits import Traits, link, sigmoid
from recsys.config.catalog import Catalog
from recsys.db import Connection


@dataclass(frozen=True)
class PosteriorConfig:
    """How the posterior is approximated and how many draws value the actions."""

    particles: int = 1024
    """Importance-sampling particles per user for (responsiveness, preferred hour, fatigue)."""
    samples: int = 64
    """Posterior draws of the traits per user that average the generator's expected value (on 5,000
    users: 32 draws and 128 value the same decisions within the run-to-run spread of +-0.01)."""
    grid: int = 64
    """Grid points on (0, 1) for each offer-type trait."""
    hour_bins: int = 96
    """Grid of the preferred hour (a quarter hour per bin)."""
    activity_grid: int = 80
    """Grid points of the log session rate (the prior's median +- 4 log-sd)."""
    chunk_users: int = 256
    """Users per block of the importance sampling and of the valuation."""
    seed: int = 0
    """Seeds every draw."""


# --- the posterior ---------------------------------------------------------------------------------


def _stratified(rng: np.random.Generator, n: int, s: int) -> np.ndarray:
    """(n, s) uniforms, one in each of the s strata of (0, 1) per row, the strata in random order:
    a trait's draws cover its posterior evenly (the valuation's Monte Carlo noise falls), and the
    random order keeps the draws of different traits independent."""
    return (rng.permuted(np.tile(np.arange(s), (n, 1)), axis=1) + rng.random((n, s))) / s


def _grid_draws(rng: np.random.Generator, log_post: np.ndarray, grid: np.ndarray, width: float, s: int) -> np.ndarray:
    """`s` stratified draws per row from a posterior on `grid` (log densities, rows), jittered within a cell."""
    post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
    cdf = np.cumsum(post, axis=1)
    cdf /= cdf[:, -1:]
    u = _stratified(rng, len(post), s)
    cell = np.minimum((u[:, :, None] > cdf[:, None, :]).sum(axis=2), len(grid) - 1)
    return grid[cell] + (rng.random((len(post), s)) - 0.5) * width


def _beta_log_prior(grid: np.ndarray, ab: tuple[float, float]) -> np.ndarray:
    return (ab[0] - 1.0) * np.log(grid) + (ab[1] - 1.0) * np.log1p(-grid)


def _bernoulli(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1.0 - 1e-9)
    return np.where(y, np.log(p), np.log1p(-p))


def _type_trait_log_posteriors(obs: Observed, p: SynthParams, focus: np.ndarray, grid: np.ndarray) -> list[np.ndarray]:
    """Log posterior (n, grid) of each offer-type trait (OFFER_TYPES order)."""
    out = []
    priors = (
        p.discount_sensitivity_beta,
        p.free_shipping_preference_beta,
        p.recommendation_affinity_beta,
        p.bundle_affinity_beta,
    )
    g = grid[None, :]
    for t, ab in enumerate(priors):
        log_post = np.tile(_beta_log_prior(grid, ab), (obs.n, 1))
        sel = np.flatnonzero((obs.offer_type == t) & obs.opened)
        v = obs.offer_value[sel][:, None]
        ch = obs.offer_channel[sel]
        if t == 0:
            click, conv = p.discount_click * g * v / 10.0, p.discount_convert * g * v / 10.0
        elif t == 1:
            appeal = np.exp(-v / p.free_shipping_threshold_scale)
            click, conv = p.free_shipping_click * g * appeal, p.free_shipping_convert * g * appeal
        elif t == 2:
            f = focus[obs.offer_user[sel]][:, None]
            lo, hi = p.recommendation_ideal_products
            fit = np.exp(-0.5 * ((v - (lo + (hi - lo) * (1.0 - f))) / p.recommendation_fit_width) ** 2)
            click, conv = p.recommendation_click * g * f * fit, p.recommendation_convert * g * f
        else:
            click, conv = p.bundle_click * g * v / 10.0, p.bundle_convert * g + 0.0 * v
        clicked = obs.clicked[sel][:, None]
        ll = _bernoulli(link(p, np.asarray(p.click_logit)[ch][:, None] + click), clicked)
        ll = ll + np.where(clicked, _bernoulli(link(p, p.conversion_logit + conv), obs.converted[sel][:, None]), 0.0)
        np.add.at(log_post, obs.offer_user[sel], ll)
        if t in (0, 1):  # organic purchases' flags
            base, slope = (
                (p.organic_discount_base, p.organic_discount_slope)
                if t == 0
                else (p.organic_free_shipping_base, p.organic_free_shipping_slope)
            )
            used = obs.organic_discount if t == 0 else obs.organic_free_shipping
            used = np.minimum(used, obs.organic_orders)[:, None]
            q = base + slope * g
            log_post += used * np.log(q) + (obs.organic_orders[:, None] - used) * np.log1p(-q)
        out.append(log_post)
    return out


def _wrapped_normal_log_pdf(d: np.ndarray, sd: float) -> np.ndarray:
    dens = sum(np.exp(-0.5 * ((d + 24.0 * j) / sd) ** 2) for j in (-1, 0, 1))
    return np.log(dens / (sd * np.sqrt(2.0 * np.pi)) + 1e-300)


def _hour_log_posterior(obs: Observed, p: SynthParams, centres: np.ndarray) -> np.ndarray:
    """Log posterior (n, bins) of the preferred hour given the organic sessions' local start hours."""
    weights = np.asarray(p.preferred_hour_weights) / sum(p.preferred_hour_weights)
    prior = sum(
        w * np.exp(_wrapped_normal_log_pdf(centres - m, p.preferred_hour_sd))
        for w, m in zip(weights, p.preferred_hour_modes, strict=True)
    )
    bins = len(centres)
    hist = np.zeros((obs.n, bins))
    b = np.minimum((np.mod(obs.session_hour, 24.0) / 24.0 * bins).astype(np.int64), bins - 1)
    np.add.at(hist, (obs.session_user, b), 1.0)
    # session start ~ N(preferred hour, session_hour_sd^2) wrapped: (n, bins) @ (bins, bins)
    lik = _wrapped_normal_log_pdf(centres[:, None] - centres[None, :], p.session_hour_sd)
    return np.log(prior)[None, :] + hist @ lik


@dataclass(frozen=True)
class Posterior:
    """Posterior draws of every user's traits: row i * samples + s is draw s of user row i."""

    traits: Traits
    samples: int
    ess: np.ndarray
    """Effective sample size of the importance weights, per user."""


def posterior_traits(obs: Observed, params: SynthParams, config: PosteriorConfig = PosteriorConfig()) -> Posterior:
    """Draws from each user's posterior of the generator's traits given `obs` (module docstring)."""
    p, n, s = params, obs.n, config.samples
    rng = np.random.default_rng(config.seed)

    # category affinities: Dirichlet
    popularity = np.asarray(p.category_popularity) / sum(p.category_popularity)
    alpha = p.category_concentration * popularity[None, :] + obs.view_counts
    affinity = rng.gamma(np.repeat(alpha, s, axis=0))
    affinity = np.maximum(affinity / affinity.sum(axis=1, keepdims=True), 1e-6)
    affinity /= affinity.sum(axis=1, keepdims=True)
    k = affinity.shape[1]
    focus_draws = (affinity.max(axis=1) - 1.0 / k) / (1.0 - 1.0 / k)
    mean_focus = focus_draws.reshape(n, s).mean(axis=1)

    # basket: conjugate normal on the log mean order value
    sd = p.order_log_sd
    prec = 1.0 / p.basket_log_sd**2 + obs.organic_orders / sd**2
    mean = (
        np.log(p.basket_median) / p.basket_log_sd**2
        + (obs.organic_sum_log_amount + obs.organic_orders * 0.5 * sd * sd) / sd**2
    ) / prec
    x = np.linspace(-4.5, 4.5, 181)
    normal = _grid_draws(rng, np.tile(-0.5 * x * x, (n, 1)), x, x[1] - x[0], s)
    basket = np.exp(mean[:, None] + normal / np.sqrt(prec)[:, None]).ravel()

    # activity: Poisson counts of organic sessions, log-normal prior, on a grid
    mu, lsd = np.log(p.activity_median_per_day), p.activity_log_sd
    la = np.linspace(mu - 4 * lsd, mu + 4 * lsd, config.activity_grid)
    count = obs.organic_sessions.astype(np.float64)[:, None]
    log_post = -0.5 * ((la - mu) / lsd) ** 2 + count * la[None, :] - np.exp(la)[None, :] * obs.days
    activity = np.exp(_grid_draws(rng, log_post, la, la[1] - la[0], s)).ravel()

    # offer-type traits: grids
    grid = (np.arange(config.grid) + 0.5) / config.grid
    type_traits = [
        np.clip(_grid_draws(rng, lp, grid, 1.0 / config.grid, s), 1e-4, 1 - 1e-4).ravel()
        for lp in _type_trait_log_posteriors(obs, p, mean_focus, grid)
    ]

    # responsiveness, preferred hour, fatigue: importance sampling
    centres = (np.arange(config.hour_bins) + 0.5) * 24.0 / config.hour_bins
    hour_log_post = _hour_log_posterior(obs, p, centres)
    z_out, hour_out, fatigue_out, ess = _open_particles(obs, p, config, rng, hour_log_post, centres)

    traits = Traits(
        discount_sensitivity=type_traits[0],
        free_shipping_preference=type_traits[1],
        recommendation_affinity=type_traits[2],
        bundle_affinity=type_traits[3],
        responsiveness=link(p, np.asarray(p.open_rate_logit) + z_out),
        preferred_hour=hour_out,
        category_affinity=affinity,
        activity_rate=activity,
        basket_mean=basket,
        fatigue=fatigue_out,
    )
    return Posterior(traits=traits, samples=s, ess=ess)


def _open_particles(
    obs: Observed,
    p: SynthParams,
    config: PosteriorConfig,
    rng: np.random.Generator,
    hour_log_post: np.ndarray,
    centres: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(z (n*S, 3), preferred hour (n*S,), fatigue (n*S,), ESS (n,)): particles from the prior of z
    and fatigue and the session-hour posterior of the hour, weighted by opens, session channels and
    consent, resampled to S draws per user."""
    n, m, s = obs.n, config.particles, config.samples
    corr = np.full((3, 3), p.responsiveness_corr)
    np.fill_diagonal(corr, 1.0)
    chol = np.linalg.cholesky(corr * p.responsiveness_sd**2)
    logit = np.asarray(p.open_rate_logit)
    weekday = np.asarray(p.weekday_open_factor)
    z_out, hour_out, fatigue_out = np.empty((n * s, 3)), np.empty(n * s), np.empty(n * s)
    ess = np.empty(n)
    channel_counts = np.zeros((n, len(SESSION_CHANNELS)))
    np.add.at(channel_counts, (obs.session_user, obs.session_channel), 1.0)
    offer_starts = np.searchsorted(obs.offer_user, np.arange(n + 1))
    any_consent = obs.consent.any(axis=1)
    lo_app, hi_app = p.app_share_range
    for lo in range(0, n, config.chunk_users):
        hi = min(lo + config.chunk_users, n)
        u = hi - lo
        z = rng.standard_normal((u, m, 3)) @ chol.T
        fatigue = rng.gamma(p.fatigue_gamma[0], p.fatigue_gamma[1], size=(u, m))
        hour = np.mod(_grid_draws(rng, hour_log_post[lo:hi], centres, centres[1] - centres[0], m), 24.0)
        resp = link(p, logit + z)  # (u, m, 3)
        log_w = np.zeros((u, m))
        # opens of the logged offers
        sl = slice(offer_starts[lo], offer_starts[hi])
        rows = obs.offer_user[sl] - lo
        ch = obs.offer_channel[sl]
        dist = np.abs(np.mod(obs.offer_hour[sl][:, None] - hour[rows] + 12.0, 24.0) - 12.0)
        timing = p.timing_floor + (1.0 - p.timing_floor) * np.exp(-0.5 * (dist / p.timing_width_hours) ** 2)
        k = obs.offer_k[sl][:, None]
        load = k * (k + 1) / 4.0 if p.world == "shifted" else k
        p_open = resp[rows, :, ch] * timing * np.exp(-fatigue[rows] * load) * weekday[obs.offer_weekday[sl]][:, None]
        np.add.at(log_w, rows, _bernoulli(np.minimum(p_open, 0.99), obs.opened[sl][:, None]))
        # what brought the organic sessions
        consent = obs.consent[lo:hi, None, :]
        msg = p.messaging_session_share * resp * consent
        rest = 1.0 - msg.sum(axis=2)
        app = rest * (lo_app + (hi_app - lo_app) * np.sqrt(resp[:, :, 2]))
        probs = np.concatenate([(rest - app)[:, :, None], app[:, :, None], msg], axis=2)
        log_w += (channel_counts[lo:hi, None, :] * np.log(np.maximum(probs, 1e-12))).sum(axis=2)
        # consent follows responsiveness (users who consent to something were not in the no-consent share)
        q = sigmoid(np.asarray(p.consent_logit) + p.consent_responsiveness_slope * z)
        log_consent = _bernoulli(q, consent).sum(axis=2)
        log_w += np.where(any_consent[lo:hi, None], log_consent, 0.0)
        w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        ess[lo:hi] = 1.0 / (w * w).sum(axis=1)
        cdf = np.cumsum(w, axis=1)
        pick = np.minimum((_stratified(rng, u, s)[:, :, None] > cdf[:, None, :]).sum(axis=2), m - 1)
        take = np.arange(u)[:, None]
        out = slice(lo * s, hi * s)
        z_out[out] = z[take, pick].reshape(-1, 3)
        hour_out[out] = hour[take, pick].ravel()
        fatigue_out[out] = fatigue[take, pick].ravel()
    return z_out, hour_out, fatigue_out, ess


def _draw_responses(
    obs: Observed,
    params: SynthParams,
    catalog: Catalog,
    as_of: dt.date,
    offers_last_7d: np.ndarray,
    config: PosteriorConfig,
):
    """The posterior draws, then per block of users (lo, hi, the generator's response to every action
    on night `as_of` for each of their draws, rows user-major)."""
    from recsys.benchmark.synth.truth import GroundTruth

    post = posterior_traits(obs, params, config)
    s = post.samples
    draws = GroundTruth(
        user_ids=np.arange(obs.n * s),
        traits=post.traits,
        consent=np.ones((obs.n * s, 3), dtype=bool),
        timezone=np.repeat(obs.timezone, s),
        catalog=catalog,
        params=params,
        meta={"end_date": as_of.isoformat()},
    )
    k = np.repeat(np.asarray(offers_last_7d, dtype=np.float64), s)

    def blocks():
        for lo in range(0, obs.n, config.chunk_users):
            hi = min(lo + config.chunk_users, obs.n)
            rows = np.arange(lo * s, hi * s)
            yield lo, hi, draws.response_matrix(rows, night=as_of, offers_last_7d=k[rows])

    return post, blocks()


def _draw_mean(x: np.ndarray, users: int, samples: int) -> np.ndarray:
    """The mean over each user's draws of a (users * samples, n_actions) block."""
    return x.reshape(users, samples, -1).mean(axis=1)


def posterior_values(
    obs: Observed,
    params: SynthParams,
    catalog: Catalog,
    as_of: dt.date,
    offers_last_7d: np.ndarray,
    config: PosteriorConfig = PosteriorConfig(),
) -> tuple[np.ndarray, Posterior]:
    """The posterior expected value (n, catalog's offers) of every action per user on night `as_of`
    (consent not applied: mask it), and the posterior draws it averaged."""
    post, blocks = _draw_responses(obs, params, catalog, as_of, offers_last_7d, config)
    values = np.empty((obs.n, catalog.n_actions))
    for lo, hi, r in blocks:

        def mean(x: np.ndarray, u: int = hi - lo) -> np.ndarray:
            return _draw_mean(x, u, post.samples)

        # The opens (responsiveness, hour, fatigue) are independent a posteriori of what follows an
        # open (offer-type traits, focus, basket): E[open x rest] = E[open] E[rest], each mean over
        # the draws, a valuation with far less Monte Carlo noise than the mean of the products.
        converted = mean(r.p_open) * mean(r.p_click * r.p_convert * r.net_value)
        unsubscribed = mean(r.p_open * r.p_unsubscribe)
        values[lo:hi] = converted - mean(r.contact_cost) - params.unsubscribe_penalty * unsubscribed
    return values, post


POSTERIOR_STAGES = ("open", "click", "convert", "unsubscribe", "net", "contact")
"""The stages `posterior_stages` returns: P(open), P(click | open), P(convert | click),
P(unsubscribe | open), the net value of a conversion and the contact cost."""


def posterior_stages(
    obs: Observed,
    params: SynthParams,
    catalog: Catalog,
    as_of: dt.date,
    offers_last_7d: np.ndarray,
    config: PosteriorConfig = PosteriorConfig(),
) -> dict[str, np.ndarray]:
    """Each stage's posterior mean (n, catalog's offers) per user and action on night `as_of`
    (`POSTERIOR_STAGES`), for taking the ceiling apart stage by stage (bench/bench_stage_gap.py).
    Their product is not `posterior_values`: the stages after an open share their traits."""
    post, blocks = _draw_responses(obs, params, catalog, as_of, offers_last_7d, config)
    out = {name: np.empty((obs.n, catalog.n_actions)) for name in POSTERIOR_STAGES}
    for lo, hi, r in blocks:
        fields = (r.p_open, r.p_click, r.p_convert, r.p_unsubscribe, r.net_value, r.contact_cost)
        for name, x in zip(POSTERIOR_STAGES, fields, strict=True):
            out[name][lo:hi] = _draw_mean(x, hi - lo, post.samples)
    return out


def posterior_actions(
    conn: Connection,
    as_of: dt.date,
    user_ids: np.ndarray,
    mask: np.ndarray,
    offers_last_7d: np.ndarray,
    params: SynthParams,
    catalog: Catalog,
    config: PosteriorConfig = PosteriorConfig(),
) -> tuple[np.ndarray, Posterior]:
    """Greedy on the posterior expected value: one action id per user of `user_ids` (sorted) among
    the allowed ones of `mask` (-1 for a user with none), and the posterior draws it used. `catalog`
    may carry the rest action (worth exactly 0, like the truth's)."""
    obs = load_observed(conn, as_of, user_ids)
    offers = catalog.without_rest() if catalog.rest_action else catalog
    values, post = posterior_values(obs, params, offers, as_of, offers_last_7d, config)
    if catalog.rest_action:
        values = np.concatenate([values, np.zeros((len(values), 1))], axis=1)
    chosen = np.where(mask, values, -np.inf).argmax(axis=1)
    return np.where(mask.any(axis=1), chosen, -1), post
