"""Every constant of the synthetic world, in one dataclass.

`SynthParams` holds the distributions of the hidden user traits, the response model that turns a
trait vector and an offer into probabilities, the organic shopping behaviour, and the randomised
logging policy of the past campaigns. The generator (`recsys.benchmark.synth.generate`) and the ground truth
(`recsys.benchmark.synth.truth`) both read it; the truth file stores the values it was generated with, so a
later change of a default never changes the meaning of an existing truth file.

Money is in currency units, times are in hours unless a name says otherwise.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

CATEGORIES: tuple[str, ...] = (
    "electronics",
    "fashion",
    "home",
    "beauty",
    "sports",
    "toys",
    "books",
    "grocery",
)
"""Product categories that views, carts, purchases and category offers refer to."""

CHANNELS: tuple[str, ...] = ("email", "sms", "push")
"""Message channels, in the order used by every per-channel tuple below."""

OFFER_TYPES: tuple[str, ...] = ("discount", "free_shipping", "recommendation", "bundle")
"""Offer types the response model knows, in the order of the code used internally."""

TIMEZONES: tuple[str, ...] = (
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
    "UTC",
)
"""IANA time zones users live in (both sides of UTC, with and without daylight saving)."""

FIRST_NAMES: tuple[str, ...] = (
    "Ava", "Ben", "Chloe", "Daniel", "Emma", "Felix", "Grace", "Hugo", "Isla", "Jack",
    "Kai", "Lena", "Mia", "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Sam", "Tara",
    "Umar", "Vera", "Will", "Xena", "Yara", "Zoe", "Aiko", "Ravi", "Priya", "Hana",
    "Kenji", "Lucas", "Sofia", "Mateo", "Elif", "Omar", "Nina", "Leon", "Maya", "Arjun",
    "Chen", "Fatima", "Jonas", "Ines", "Diego", "Amara", "Liam", "Sara", "Yuki", "Anna",
)  # fmt: skip
"""First names for message templates (drawn uniformly)."""


WORLDS: tuple[str, ...] = ("standard", "shifted")
"""The generator's forms. `standard` is the documented model; `shifted` differs from it on purpose,
so that a benchmark can show whether a learner that mirrors the standard form still wins when the
world is not shaped like its model (see `SynthParams.world`)."""


@dataclass(frozen=True)
class SynthParams:
    """Distributions and constants of the synthetic shop; defaults are the documented model."""

    world: str = "standard"
    """The form of the response and of the traits (WORLDS). `shifted` changes four things, each
    with the constants below:
    - probit links instead of logistic ones: P = Phi(logit / probit_scale) for the channel
      responsiveness, P(click | open) and P(convert | click) (same medians, other tails);
    - affinities correlated with browsing and basket (Gaussian copula on ranks): recommendation
      affinity with the session rate, discount sensitivity against the basket, bundle affinity
      with the basket (`shifted_correlations`);
    - offers that partly cannibalise organic purchases: a share min(cap, rate x sessions per day) of
      a conversion's orders would have come anyway at full price, and that margin is lost;
    - hazard-type fatigue: opens fall by exp(-fatigue x k (k + 1) / 4) with k offers in the last
      7 nights (the first contacts cost little, the later ones more and more)."""

    # --- who the users are -------------------------------------------------------------------
    timezone_weights: tuple[float, ...] = (0.20, 0.08, 0.14, 0.14, 0.14, 0.08, 0.08, 0.06, 0.08)
    """Share of users per entry of TIMEZONES."""
    discount_sensitivity_beta: tuple[float, float] = (2.0, 3.0)
    """Beta(a, b) of discount sensitivity in [0, 1]."""
    free_shipping_preference_beta: tuple[float, float] = (2.0, 3.0)
    """Beta(a, b) of free-shipping preference in [0, 1]."""
    recommendation_affinity_beta: tuple[float, float] = (2.0, 3.0)
    """Beta(a, b) of affinity to personalised recommendations in [0, 1]."""
    bundle_affinity_beta: tuple[float, float] = (1.8, 3.2)
    """Beta(a, b) of affinity to bundles in [0, 1]."""
    open_rate_logit: tuple[float, float, float] = (-1.3, 0.3, -1.9)
    """Logit of the open rate at the preferred hour of a median user, per channel (email, sms, push)."""
    responsiveness_sd: float = 1.0
    """Standard deviation of the per-user channel deviation z_c ~ N(0, sd^2) added to the logit."""
    responsiveness_corr: float = 0.25
    """Correlation of z_c between channels (some people read everything, some nothing)."""
    preferred_hour_modes: tuple[float, float, float] = (8.5, 12.5, 19.5)
    """Preferred local hour for reading messages: centres of a morning, midday and evening group."""
    preferred_hour_weights: tuple[float, float, float] = (0.30, 0.25, 0.45)
    """Share of users in each preferred-hour group."""
    preferred_hour_sd: float = 1.2
    """Spread (hours) of the preferred hour within a group, normal, wrapped to [0, 24)."""
    category_popularity: tuple[float, ...] = (0.16, 0.18, 0.15, 0.12, 0.11, 0.08, 0.10, 0.10)
    """Mean category affinity, per entry of CATEGORIES."""
    category_concentration: float = 3.0
    """Dirichlet concentration: affinities ~ Dirichlet(concentration * popularity); small = focused users."""
    activity_median_per_day: float = 0.055
    """Median organic sessions per day; the rate is log-normal around it."""
    activity_log_sd: float = 0.9
    """Log-scale standard deviation of the session rate (mean = median * exp(sd^2 / 2))."""
    basket_median: float = 42.0
    """Median over users of the mean order value."""
    basket_log_sd: float = 0.5
    """Log-scale standard deviation over users of the mean order value."""
    order_log_sd: float = 0.45
    """Log-scale standard deviation of one order around the user's mean order value."""
    fatigue_gamma: tuple[float, float] = (2.0, 0.15)
    """Gamma(shape, scale) of fatigue: each offer in the last 7 nights multiplies opens by exp(-fatigue)."""
    no_consent_share: float = 0.12
    """Share of users who consent to no channel at all."""
    consent_logit: tuple[float, float, float] = (1.2, -0.6, -0.1)
    """Logit of consenting to each channel (email, sms, push) for a median-responsive user."""
    consent_responsiveness_slope: float = 0.8
    """How much the channel deviation z_c raises the consent logit (consent follows interest)."""
    address_without_consent: tuple[float, float, float] = (0.35, 0.25, 0.15)
    """Probability of having an address (email, phone, push token) without consenting to the channel."""
    profile_age_days: float = 365.0
    """`updated_at` of a user row is uniform over this many days before the window starts."""

    # --- the response model (one offer, one user, one night) ---------------------------------
    release_hour_local: float = 9.0
    """Configured send time, local hour (09:00)."""
    publish_hour_utc: float = 1.0
    """A night's campaign is published at this UTC hour; release = max(send time local, publish time)."""
    timing_floor: float = 0.35
    """Open-rate factor of a message sent far from the preferred hour (1.0 at the preferred hour)."""
    timing_width_hours: float = 2.5
    """Width of the Gaussian bump of the open rate around the preferred hour."""
    weekday_open_factor: tuple[float, ...] = (0.98, 1.0, 1.0, 0.99, 0.93, 1.04, 1.06)
    """Open-rate factor per weekday of the campaign night, Monday first (mean 1)."""
    click_logit: tuple[float, float, float] = (-3.2, -2.8, -2.9)
    """Logit of P(click | open) per channel for an offer with no appeal to the user."""
    conversion_logit: float = -2.2
    """Logit of P(convert | click) for an offer with no appeal to the user."""
    discount_click: float = 2.0
    """Click-logit gain per unit of discount sensitivity per 10 percent off."""
    discount_convert: float = 1.0
    """Conversion-logit gain per unit of discount sensitivity per 10 percent off."""
    free_shipping_click: float = 3.4
    """Click-logit gain per unit of free-shipping preference, times exp(-threshold / scale)."""
    free_shipping_convert: float = 1.6
    """Conversion-logit gain per unit of free-shipping preference, times exp(-threshold / scale)."""
    free_shipping_threshold_scale: float = 40.0
    """Currency scale of the minimum order value: a lower threshold is more attractive."""
    shipping_fee: float = 5.5
    """Shipping fee the shop pays on a free-shipping conversion."""
    recommendation_click: float = 4.5
    """Click-logit gain per unit of (recommendation affinity x focus x list fit)."""
    recommendation_convert: float = 2.0
    """Conversion-logit gain per unit of (recommendation affinity x focus)."""
    recommendation_ideal_products: tuple[float, float] = (5.0, 15.0)
    """Ideal list length of a fully focused user and of a user with no favourite category."""
    recommendation_fit_width: float = 4.0
    """Width (products) of the list-length fit around the user's ideal length."""
    recommendation_basket_lift: float = 0.3
    """Order value multiplier 1 + lift x affinity x focus for a recommendation conversion."""
    bundle_click: float = 1.8
    """Click-logit gain per unit of bundle affinity per 10 percent off the bundle."""
    bundle_convert: float = 1.2
    """Conversion-logit gain per unit of bundle affinity."""
    bundle_basket_lift: float = 1.2
    """Order value multiplier 1 + lift x bundle affinity for a bundle conversion."""
    margin_rate: float = 0.32
    """Gross margin on list price: cost of goods is (1 - margin_rate) of the list value."""
    contact_cost: tuple[float, float, float] = (0.003, 0.03, 0.002)
    """Cost of sending one message per channel (email, sms, push)."""
    unsubscribe_per_open: tuple[float, float, float] = (0.006, 0.012, 0.010)
    """P(unsubscribe | open) per channel for a user not contacted in the last 7 nights."""
    unsubscribe_fatigue: float = 1.5
    """P(unsubscribe | open) is multiplied by 1 + this x fatigue x offers in the last 7 nights."""
    unsubscribe_penalty: float = 4.0
    """Value lost when a user unsubscribes from a channel (future contacts forgone)."""

    # --- organic shopping ---------------------------------------------------------------------
    session_hour_sd: float = 2.5
    """Spread (hours) of a session's local start hour around the user's session hour (the preferred
    hour, unless decoupled below). Larger: each session says less about the hour."""
    session_hour_decoupled_share: float = 0.0
    """Share of users whose sessions centre on another hour than the one they read messages at: the
    preferred hour + session_hour_decoupled_shift. It weakens the link that a send-time learner (the
    best_hour timing, learned from session start hours) relies on; which users is a fixed draw per
    truth (`GroundTruth.session_hour`). 0: sessions and reading are one habit (the seed's shop)."""
    session_hour_decoupled_shift: float = 8.0
    """Hours from a decoupled user's preferred (reading) hour to the centre of their sessions."""
    extra_views_mean: float = 2.6
    """A session has 1 + Poisson(this) product views."""
    cart_per_view: float = 0.12
    """P(add to cart) per viewed product."""
    purchase_given_cart: float = 0.40
    """P(purchase) of a session with at least one add-to-cart."""
    event_gap_seconds: float = 50.0
    """Mean gap between two events of a session (exponential)."""
    messaging_session_share: float = 0.25
    """Scale of the share of organic sessions brought by the shop's newsletters, pushes and texts."""
    app_share_range: tuple[float, float] = (0.1, 0.75)
    """Share of the remaining sessions on the app grows from min to max with push responsiveness."""
    organic_discount_base: float = 0.03
    """P(discount used) on an organic purchase = base + slope x discount sensitivity."""
    organic_discount_slope: float = 0.45
    """See organic_discount_base."""
    organic_free_shipping_base: float = 0.05
    """P(free shipping used) on an organic purchase = base + slope x free-shipping preference."""
    organic_free_shipping_slope: float = 0.50
    """See organic_free_shipping_base."""

    # --- the logging policy of past campaigns ---------------------------------------------------
    send_share: float = 0.15
    """Each night, each user consenting to a channel gets an offer with this probability."""
    uniform_share: float = 0.5
    """Mixture weight of the uniform part: uniform over the actions on the user's consented channels."""
    recent_buyer_days: int = 30
    """The rule calls a user a recent buyer after a purchase in this many days before the night."""
    rule_channel_order: tuple[str, ...] = ("email", "push", "sms")
    """The rule sends on the first channel of this list the user consents to (cheapest first)."""
    rule_recent_buyer_offer: str = "recommendation"
    """The rule's offer type for a recent buyer (middle catalog value, first catalog timing)."""
    rule_other_offer: str = "discount"
    """The rule's offer type for everyone else (middle catalog value, first catalog timing)."""
    open_delay_mean_minutes: float = 45.0
    """Mean time from sending to opening (exponential, truncated to the data window)."""
    click_delay_mean_minutes: float = 3.0
    """Mean time from opening to clicking."""
    purchase_delay_mean_minutes: float = 12.0
    """Mean time from clicking to the purchase of a conversion."""
    response_horizon_hours: float = 24.0
    """Outcomes happen within this attribution window after sending."""

    probit_scale: float = 1.6
    """`shifted`: a logit l becomes the probability Phi(l / probit_scale)."""
    shifted_correlations: tuple[float, float, float] = (0.5, -0.5, 0.4)
    """`shifted`: rank correlations of (recommendation affinity, session rate), (discount
    sensitivity, basket) and (bundle affinity, basket)."""
    cannibalisation_per_session_rate: float = 3.0
    """`shifted`: the share of a conversion that would have happened anyway, per organic session a
    day (the median user, 0.055 sessions a day: 16%)."""
    cannibalisation_cap: float = 0.6
    """`shifted`: the most of a conversion that can be cannibalised."""

    def __post_init__(self) -> None:
        if self.world not in WORLDS:
            raise ValueError(f"world must be one of {', '.join(WORLDS)}, got {self.world!r}")

    def to_json(self) -> str:
        values = dataclasses.asdict(self)
        if self.world == "standard":
            # the standard form's files keep the bytes they had before the second form existed
            for name in _SHIFTED_ONLY:
                values.pop(name)
        if self.session_hour_decoupled_share == 0.0:
            # ... and before the session hour could be decoupled
            for name in ("session_hour_decoupled_share", "session_hour_decoupled_shift"):
                values.pop(name)
        return json.dumps(values, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SynthParams:
        raw: dict[str, Any] = json.loads(text)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in fields})


_SHIFTED_ONLY = (
    "world",
    "probit_scale",
    "shifted_correlations",
    "cannibalisation_per_session_rate",
    "cannibalisation_cap",
)
