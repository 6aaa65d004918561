"""The hidden ground truth of the synthetic shop: user traits and the one offer-response model.

This module is the only place that defines the latent traits and how a user responds to an offer.
The generator (`recsys.benchmark.synth.generate`) draws the traits here and simulates every campaign outcome
with `GroundTruth.response`; evaluation code loads the saved truth (`GroundTruth.load`) to score a
policy by its true expected value. Loading, feature and training code never import it.

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

Response to one offer: user u, action a = (type, value v, channel c, timing), night d, k = offers
the user got in the 7 nights before d
-----------------------------------------------------------------------------------------------
- local send hour = release + the timing's delay; release = max(09:00 local on d, the run's publish
  time 01:00 UTC on d) (east of UTC, 09:00 can come before the run is published).
- P(open) = responsiveness_c x timing x exp(-fatigue x k) x weekday factor of d (Monday first
  0.98, 1.0, 1.0, 0.99, 0.93, 1.04, 1.06; 1 when d is not given), capped at 0.99, where
  timing = 0.35 + 0.65 exp(-0.5 (distance between send hour and preferred hour / 2.5 h)^2).
- P(click | open) = sigmoid(click_logit_c + click gain), click logits (-3.2, -2.8, -2.9);
  P(convert | click) = sigmoid(-2.2 + conversion gain). Gains per offer type (s = the trait that
  goes with the type):
      type            click gain              conversion gain   catalog value means
      discount        2.0 s v/10              1.0 s v/10        percent off
      free_shipping   3.4 s exp(-v/40)        1.6 s exp(-v/40)  minimum order value (lower is better)
      recommendation  4.5 s focus fit(v)      2.0 s focus       products shown
      bundle          1.8 s v/10              1.2 s             percent off a bundle of the top category
  fit(v) = exp(-0.5 ((v - ideal) / 4)^2), ideal = 5 products for a fully focused user up to 15 for
  one without a favourite category.
- order on conversion: list value G = basket x lift x LogNormal(mean 1, log-sd 0.45), lift = 1 + 0.3 s
  focus for a recommendation, 1 + 1.2 s for a bundle, else 1. The customer pays G (1 - v/100) for a
  discount or a bundle, max(G, v) for free shipping (tops the order up to the threshold), G for a
  recommendation. That amount is the offer's `revenue`.
- net value of a conversion = paid - cost of goods (1 - 0.32) x list value - the shipping fee 5.5 the
  shop pays for free shipping; the offer's cost (discount given, fee paid) is charged on conversion.
  In expectation: basket (0.32 - v/100) for a discount, 0.32 E[max(G, v)] - 5.5 for free shipping,
  0.32 basket lift for a recommendation, basket lift (0.32 - v/100) for a bundle.
- P(unsubscribe | open) = u_c (1 + 1.5 fatigue k), u = (0.6%, 1.2%, 1.0%); an open leads to a click
  or an unsubscribe, never both. An unsubscribe costs 4.0 (future contacts forgone).
- expected value = P(open) P(click|open) P(convert|click) E[net | convert] - contact cost_c
  - 4.0 P(open) P(unsubscribe|open), contact cost (0.003, 0.03, 0.002) for (email, sms, push).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.benchmark.synth.clock import HOUR, epoch_seconds, release_seconds, utc_offsets
from recsys.benchmark.synth.params import CATEGORIES, CHANNELS, OFFER_TYPES, TIMEZONES, SynthParams
from recsys.config.catalog import Catalog
from recsys.errors import GenerateError

TRUTH_FORMAT = "recsys-synth-truth/1"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_CHUNK_USERS = 8_192


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


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
    """Draw the traits of `n` users and their initial consent (n, 3) bool, as documented above."""
    p = params
    discount = rng.beta(*p.discount_sensitivity_beta, size=n)
    free_ship = rng.beta(*p.free_shipping_preference_beta, size=n)
    rec = rng.beta(*p.recommendation_affinity_beta, size=n)
    bundle = rng.beta(*p.bundle_affinity_beta, size=n)
    corr = np.full((3, 3), p.responsiveness_corr)
    np.fill_diagonal(corr, 1.0)
    chol = np.linalg.cholesky(corr * p.responsiveness_sd**2)
    z = rng.standard_normal((n, 3)) @ chol.T
    responsiveness = _sigmoid(np.asarray(p.open_rate_logit) + z)
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
    consent = rng.random((n, 3)) < _sigmoid(np.asarray(p.consent_logit) + p.consent_responsiveness_slope * z)
    consent &= ~none[:, None]
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


@dataclass(frozen=True)
class Response:
    """Outcome probabilities of sending offers (elementwise over the broadcast user/action shape)."""

    p_open: np.ndarray
    p_click: np.ndarray
    """P(click | open)."""
    p_convert: np.ndarray
    """P(convert | click)."""
    p_unsubscribe: np.ndarray
    """P(unsubscribe | open)."""
    net_value: np.ndarray
    """Expected net value of a conversion (margin after the offer's cost)."""
    contact_cost: np.ndarray

    def expected_value(self, unsubscribe_penalty: float) -> np.ndarray:
        converted = self.p_open * self.p_click * self.p_convert
        unsubscribed = self.p_open * self.p_unsubscribe
        return converted * self.net_value - self.contact_cost - unsubscribe_penalty * unsubscribed


@dataclass(frozen=True)
class FixedVsOracle:
    """Mean value per user of the per-user best action and of the best single action."""

    oracle_mean: float
    fixed_action_id: int
    fixed_action: str
    fixed_mean: float

    @property
    def ratio(self) -> float:
        return self.fixed_mean / self.oracle_mean if self.oracle_mean > 0 else float("nan")


@dataclass(frozen=True)
class PersonalisationReport:
    """How much personalisation is worth under the truth (offers_last_7d = 0, an average weekday)."""

    n_users: int
    with_consent: FixedVsOracle
    """Only channels the user consents to (others are worth 0: they cannot be sent)."""
    ignoring_consent: FixedVsOracle
    """Every action allowed: heterogeneity of preferences alone."""


class GroundTruth:
    """Latent traits of the synthetic users and the response model; see the module docstring."""

    def __init__(
        self,
        *,
        user_ids: np.ndarray,
        traits: Traits,
        consent: np.ndarray,
        timezone: np.ndarray,
        catalog: Catalog,
        params: SynthParams,
        meta: dict,
    ) -> None:
        self.user_ids = np.asarray(user_ids, dtype=np.int64)
        self.traits = traits
        self.consent = np.asarray(consent, dtype=bool)
        """(n, 3) consent per channel of CHANNELS at the end of the data."""
        self.timezone = np.asarray(timezone, dtype=np.int8)
        """Index into TIMEZONES per user."""
        self.catalog = catalog
        self.params = params
        self.meta = dict(meta)
        self._order = np.argsort(self.user_ids, kind="stable")
        self._sorted_ids = self.user_ids[self._order]
        actions = catalog.actions
        self.action_type = np.array([OFFER_TYPES.index(a.offer_type) for a in actions], dtype=np.int64)
        self.action_value = np.array([a.value for a in actions], dtype=np.float64)
        self.action_channel = np.array([CHANNELS.index(a.channel) for a in actions], dtype=np.int64)
        self.action_delay_hours = np.array(
            [catalog.timing_delay_minutes[a.timing] / 60.0 for a in actions], dtype=np.float64
        )
        self._focus = traits.focus()
        self._end_date = dt.date.fromisoformat(self.meta["end_date"])

    @property
    def n_actions(self) -> int:
        return len(self.action_type)

    # --- users and nights ------------------------------------------------------------------------

    def index_of(self, user_ids: np.ndarray) -> np.ndarray:
        """Row index of each user id; unknown ids are an error that names them."""
        ids = np.asarray(user_ids, dtype=np.int64)
        pos = np.searchsorted(self._sorted_ids, ids)
        pos = np.minimum(pos, len(self._sorted_ids) - 1)
        found = self._sorted_ids[pos] == ids
        if not found.all():
            missing = np.unique(ids[~found])[:5].tolist()
            raise GenerateError(
                f"user ids {missing} are not in the ground truth ({len(self.user_ids):,} users, "
                f"ids {self._sorted_ids[0]}..{self._sorted_ids[-1]})"
            )
        return self._order[pos]

    def release_local_hour(self, night: dt.date | None = None) -> np.ndarray:
        """Local hour (per user) at which the night's offers are released, before the timing's delay."""
        day = night or self._end_date
        offsets = utc_offsets(TIMEZONES, day, 1)[:, 0]
        offset = offsets[self.timezone]
        start = epoch_seconds(day)
        release = release_seconds(offset, start, self.params.release_hour_local, self.params.publish_hour_utc)
        return (release - start + offset) / HOUR

    def _weekday_factor(self, night: dt.date | None) -> float:
        return 1.0 if night is None else float(self.params.weekday_open_factor[night.weekday()])

    # --- the response model ----------------------------------------------------------------------

    def response(
        self,
        idx: np.ndarray,
        action_ids: np.ndarray,
        *,
        night: dt.date | None = None,
        offers_last_7d: np.ndarray | int = 0,
        release_hour: np.ndarray | None = None,
    ) -> Response:
        """Outcome probabilities for user rows `idx` and actions `action_ids` (broadcast together).

        `release_hour` (local, per user row of the whole truth) can be passed in when the caller
        computes many responses for the same night; by default it is computed for `night`.
        """
        a = np.asarray(action_ids)
        return self._response(
            np.asarray(idx),
            self.action_type[a],
            self.action_value[a],
            self.action_channel[a],
            self.action_delay_hours[a],
            night=night,
            offers_last_7d=offers_last_7d,
            release_hour=release_hour,
        )

    def _grid_response(
        self, rows: np.ndarray, *, night: dt.date | None, offers_last_7d: np.ndarray | int, release_hour: np.ndarray
    ) -> np.ndarray:
        """Expected values (len(rows), n_actions) of every action, computing each factor on its own axes.

        Actions are the catalog's product offer_types x values x channels x timings in that nested
        order, so the factors broadcast over a (users, types, values, channels, timings) grid.
        """
        cat = self.catalog
        typ = np.array([OFFER_TYPES.index(t) for t in cat.offer_types]).reshape(1, -1, 1, 1, 1)
        val = np.asarray(cat.values, dtype=np.float64).reshape(1, 1, -1, 1, 1)
        ch = np.array([CHANNELS.index(c) for c in cat.channels]).reshape(1, 1, 1, -1, 1)
        delay = np.array([cat.timing_delay_minutes[t] / 60.0 for t in cat.timings]).reshape(1, 1, 1, 1, -1)
        k = np.asarray(offers_last_7d, dtype=np.float64)
        k = k.reshape(-1, 1, 1, 1, 1) if k.ndim == 1 else k
        resp = self._response(
            rows.reshape(-1, 1, 1, 1, 1),
            typ,
            val,
            ch,
            delay,
            night=night,
            offers_last_7d=k,
            release_hour=release_hour,
        )
        return resp.expected_value(self.params.unsubscribe_penalty).reshape(len(rows), self.n_actions)

    def _response(
        self,
        idx: np.ndarray,
        typ: np.ndarray,
        val: np.ndarray,
        ch: np.ndarray,
        delay_hours: np.ndarray,
        *,
        night: dt.date | None,
        offers_last_7d: np.ndarray | int,
        release_hour: np.ndarray | None,
    ) -> Response:
        """The response model on any broadcastable arrays of user rows and action attributes."""
        p = self.params
        tr = self.traits
        if release_hour is None:
            release_hour = self.release_local_hour(night)
        k = np.asarray(offers_last_7d, dtype=np.float64)

        send_hour = release_hour[idx] + delay_hours
        distance = np.abs(np.mod(send_hour - tr.preferred_hour[idx] + 12.0, 24.0) - 12.0)
        timing = p.timing_floor + (1.0 - p.timing_floor) * np.exp(-0.5 * (distance / p.timing_width_hours) ** 2)
        fatigue = tr.fatigue[idx]
        p_open = tr.responsiveness[idx, ch] * timing * np.exp(-fatigue * k) * self._weekday_factor(night)
        p_open = np.minimum(p_open, 0.99)

        ds = tr.discount_sensitivity[idx]
        fs = tr.free_shipping_preference[idx]
        ra = tr.recommendation_affinity[idx]
        ba = tr.bundle_affinity[idx]
        focus = self._focus[idx]
        basket = tr.basket_mean[idx]
        tenth = val / 10.0
        fs_appeal = np.exp(-val / p.free_shipping_threshold_scale)
        ideal = p.recommendation_ideal_products[0] + (
            p.recommendation_ideal_products[1] - p.recommendation_ideal_products[0]
        ) * (1.0 - focus)
        fit = np.exp(-0.5 * ((val - ideal) / p.recommendation_fit_width) ** 2)
        is_disc, is_fs, is_rec = typ == 0, typ == 1, typ == 2

        click_gain = np.where(
            is_disc,
            p.discount_click * ds * tenth,
            np.where(
                is_fs,
                p.free_shipping_click * fs * fs_appeal,
                np.where(is_rec, p.recommendation_click * ra * focus * fit, p.bundle_click * ba * tenth),
            ),
        )
        conv_gain = np.where(
            is_disc,
            p.discount_convert * ds * tenth,
            np.where(
                is_fs,
                p.free_shipping_convert * fs * fs_appeal,
                np.where(is_rec, p.recommendation_convert * ra * focus, p.bundle_convert * ba),
            ),
        )
        p_click = _sigmoid(np.asarray(p.click_logit)[ch] + click_gain)
        p_convert = _sigmoid(p.conversion_logit + conv_gain)

        m = p.margin_rate
        off = val / 100.0
        s = p.order_log_sd
        # Free shipping: E[max(G, v)] for log-normal G with mean `basket`.
        d = (np.log(val) - np.log(basket) + 0.5 * s * s) / s
        topped_up = val * _norm_cdf(d) + basket * _norm_cdf(s - d)
        net = np.where(
            is_disc,
            basket * (m - off),
            np.where(
                is_fs,
                m * topped_up - p.shipping_fee,
                np.where(
                    is_rec,
                    basket * (1.0 + p.recommendation_basket_lift * ra * focus) * m,
                    basket * (1.0 + p.bundle_basket_lift * ba) * (m - off),
                ),
            ),
        )
        unsub = np.asarray(p.unsubscribe_per_open)[ch] * (1.0 + p.unsubscribe_fatigue * fatigue * k)
        return Response(
            p_open=p_open,
            p_click=p_click,
            p_convert=p_convert,
            p_unsubscribe=np.minimum(unsub, 0.5),
            net_value=net,
            contact_cost=np.asarray(p.contact_cost)[ch],
        )

    def sample_order(
        self, rng: np.random.Generator, idx: np.ndarray, action_ids: np.ndarray | None = None
    ) -> np.ndarray:
        """Amount paid for one order per row: organic (no action) or converting on `action_ids`."""
        p = self.params
        tr = self.traits
        s = p.order_log_sd
        basket = tr.basket_mean[idx]
        if action_ids is None:
            return basket * np.exp(s * rng.standard_normal(len(idx)) - 0.5 * s * s)
        a = np.asarray(action_ids)
        typ = self.action_type[a]
        val = self.action_value[a]
        lift = np.where(
            typ == 2,
            1.0 + p.recommendation_basket_lift * tr.recommendation_affinity[idx] * self._focus[idx],
            np.where(typ == 3, 1.0 + p.bundle_basket_lift * tr.bundle_affinity[idx], 1.0),
        )
        listed = basket * lift * np.exp(s * rng.standard_normal(len(idx)) - 0.5 * s * s)
        return np.where(
            typ == 1, np.maximum(listed, val), np.where((typ == 0) | (typ == 3), listed * (1.0 - val / 100.0), listed)
        )

    # --- organic behaviour (what the traits make users do without an offer) ----------------------

    def session_rate(self) -> np.ndarray:
        """Organic sessions per day, per user."""
        return self.traits.activity_rate

    def session_hour(self) -> np.ndarray:
        """Local hour around which a user's sessions start (the same habit as reading messages)."""
        return self.traits.preferred_hour

    def session_channel_probabilities(self, consent: np.ndarray) -> np.ndarray:
        """(n, 5) probabilities of what brings an organic session: web, app, email, sms, push.

        The shop's newsletters, pushes and texts (not offers) bring a share
        messaging_session_share x responsiveness_c of sessions on each consented channel; of the rest,
        the app takes a share growing with push responsiveness (people who read pushes use the app).
        """
        p = self.params
        msg = p.messaging_session_share * self.traits.responsiveness * consent
        rest = 1.0 - msg.sum(axis=1)
        lo, hi = p.app_share_range
        app = rest * (lo + (hi - lo) * np.sqrt(self.traits.responsiveness[:, 2]))
        return np.column_stack([rest - app, app, msg])

    def organic_flag_probabilities(self) -> tuple[np.ndarray, np.ndarray]:
        """P(discount used), P(free shipping used) on an organic purchase, per user."""
        p = self.params
        return (
            p.organic_discount_base + p.organic_discount_slope * self.traits.discount_sensitivity,
            p.organic_free_shipping_base + p.organic_free_shipping_slope * self.traits.free_shipping_preference,
        )

    def category_cdf(self) -> np.ndarray:
        """(n, len(CATEGORIES)) cumulative category affinities, for drawing what a user views."""
        return np.cumsum(self.traits.category_affinity, axis=1)

    def top_category(self) -> np.ndarray:
        """The category a recommendation or bundle offer is about: the user's favourite."""
        return self.traits.top_category()

    # --- values ----------------------------------------------------------------------------------

    def expected_value(
        self,
        user_ids: np.ndarray,
        action_ids: np.ndarray,
        *,
        night: dt.date | None = None,
        offers_last_7d: np.ndarray | int = 0,
        respect_consent: bool = True,
    ) -> np.ndarray:
        """Expected net value (currency units) of sending offer action_ids[i] to user_ids[i].

        P(open) P(click|open) P(convert|click) E[net|convert] - contact cost - unsubscribe penalty
        P(unsubscribe), where E[net|convert] already subtracts the offer's cost. With
        `respect_consent`, an action on a channel the user does not consent to is worth 0 (it cannot
        be sent). `night=None` is an average weekday with the time-zone offsets of the truth's end date.
        """
        a = self._check_actions(action_ids)
        idx = self.index_of(user_ids)
        if idx.shape != a.shape:
            raise GenerateError(f"user_ids has shape {idx.shape} but action_ids has shape {a.shape}")
        value = self.response(idx, a, night=night, offers_last_7d=offers_last_7d).expected_value(
            self.params.unsubscribe_penalty
        )
        if respect_consent:
            value = np.where(self.consent[idx, self.action_channel[a]], value, 0.0)
        return value

    def value_matrix(
        self,
        user_ids: np.ndarray | None = None,
        *,
        night: dt.date | None = None,
        offers_last_7d: np.ndarray | int = 0,
        respect_consent: bool = True,
    ) -> np.ndarray:
        """Expected values, shape (n_users, n_actions), of every action for each user (all by default)."""
        idx = np.arange(len(self.user_ids)) if user_ids is None else self.index_of(user_ids)
        k = np.asarray(offers_last_7d, dtype=np.float64)
        if k.ndim == 1 and len(k) != len(idx):
            raise GenerateError(f"offers_last_7d has {len(k)} entries for {len(idx)} users")
        release = self.release_local_hour(night)
        out = np.empty((len(idx), self.n_actions), dtype=np.float64)
        for lo in range(0, len(idx), _CHUNK_USERS):
            rows = idx[lo : lo + _CHUNK_USERS]
            kk = k[lo : lo + _CHUNK_USERS] if k.ndim == 1 else k
            block = self._grid_response(rows, night=night, offers_last_7d=kk, release_hour=release)
            if respect_consent:
                block = np.where(self.consent[rows][:, self.action_channel], block, 0.0)
            out[lo : lo + len(rows)] = block
        return out

    def oracle_actions(self, user_ids: np.ndarray | None = None, **kw) -> np.ndarray:
        """The best action id per user under the truth (ties: the lowest id)."""
        return self.value_matrix(user_ids, **kw).argmax(axis=1)

    def best_fixed_action(self, user_ids: np.ndarray | None = None, **kw) -> int:
        """The single action with the highest mean value over the users."""
        return int(self.value_matrix(user_ids, **kw).mean(axis=0).argmax())

    def personalisation_report(self) -> PersonalisationReport:
        """Best fixed action vs per-user oracle, with and without consent, over all users."""
        n = len(self.user_ids)
        release = self.release_local_hour(None)
        col = {True: np.zeros(self.n_actions), False: np.zeros(self.n_actions)}
        best = {True: 0.0, False: 0.0}
        for lo in range(0, n, _CHUNK_USERS):
            rows = np.arange(lo, min(lo + _CHUNK_USERS, n))
            block = self._grid_response(rows, night=None, offers_last_7d=0, release_hour=release)
            col[False] += block.sum(axis=0)
            best[False] += float(block.max(axis=1).sum())
            block = np.where(self.consent[rows][:, self.action_channel], block, 0.0)
            col[True] += block.sum(axis=0)
            best[True] += float(block.max(axis=1).sum())
        labels = self.catalog.actions

        def summary(consent: bool) -> FixedVsOracle:
            fixed = int(col[consent].argmax())
            action = labels[fixed]
            return FixedVsOracle(
                oracle_mean=best[consent] / n,
                fixed_action_id=fixed,
                fixed_action=action.describe(self.catalog.value_units[action.offer_type]),
                fixed_mean=float(col[consent][fixed]) / n,
            )

        return PersonalisationReport(n_users=n, with_consent=summary(True), ignoring_consent=summary(False))

    def _check_actions(self, action_ids: np.ndarray) -> np.ndarray:
        a = np.asarray(action_ids)
        if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= self.n_actions):
            raise GenerateError(f"action ids must be integers in 0..{self.n_actions - 1}, got {a[:5].tolist()}...")
        return a.astype(np.int64)

    # --- the file --------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the truth as an .npz with its metadata (deterministic bytes for identical content)."""
        tr = self.traits
        arrays = {
            "user_ids": self.user_ids,
            "timezone": self.timezone,
            "consent": self.consent,
            **{f.name: np.asarray(getattr(tr, f.name), dtype=np.float32) for f in dataclasses.fields(Traits)},
            "meta_json": np.array(json.dumps(self.meta, sort_keys=True)),
            "params_json": np.array(self.params.to_json()),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
                info.external_attr = 0o644 << 16
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asarray(array, order="C"), allow_pickle=False)
                zf.writestr(info, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> GroundTruth:
        """Read a truth file written by `recsys generate-data`."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except FileNotFoundError as e:
            raise GenerateError(f"ground truth file not found: {path}") from e
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise GenerateError(f"{path}: not a ground truth file ({e})") from e
        required = {"user_ids", "timezone", "consent", "meta_json", "params_json"} | {
            f.name for f in dataclasses.fields(Traits)
        }
        missing = sorted(required - data.keys())
        if missing:
            raise GenerateError(f"{path}: not a ground truth file (missing arrays {missing})")
        meta = json.loads(str(data["meta_json"].item()))
        if meta.get("format") != TRUTH_FORMAT:
            raise GenerateError(f"{path}: unsupported truth format {meta.get('format')!r}, expected {TRUTH_FORMAT!r}")
        if list(meta["timezones"]) != list(TIMEZONES) or list(meta["categories"]) != list(CATEGORIES):
            raise GenerateError(f"{path}: written with other time zones or categories than this version knows")
        cat = meta["catalog"]
        catalog = Catalog(
            offer_types=tuple(cat["offer_types"]),
            values=tuple(float(v) for v in cat["values"]),
            channels=tuple(cat["channels"]),
            timings=tuple(cat["timings"]),
            value_units=dict(cat["value_units"]),
            category_offer_types=tuple(cat["category_offer_types"]),
            timing_delay_minutes={k: int(v) for k, v in cat["timing_delay_minutes"].items()},
        )
        if catalog.fingerprint() != meta["catalog_fingerprint"]:
            raise GenerateError(f"{path}: the stored catalog does not match its fingerprint")
        traits = Traits(**{f.name: data[f.name].astype(np.float64) for f in dataclasses.fields(Traits)})
        return cls(
            user_ids=data["user_ids"],
            traits=traits,
            consent=data["consent"],
            timezone=data["timezone"],
            catalog=catalog,
            params=SynthParams.from_json(str(data["params_json"].item())),
            meta=meta,
        )


def catalog_meta(catalog: Catalog) -> dict:
    """The catalog as stored in the truth metadata."""
    return {
        "offer_types": list(catalog.offer_types),
        "values": list(catalog.values),
        "channels": list(catalog.channels),
        "timings": list(catalog.timings),
        "value_units": dict(catalog.value_units),
        "category_offer_types": list(catalog.category_offer_types),
        "timing_delay_minutes": dict(catalog.timing_delay_minutes),
    }
