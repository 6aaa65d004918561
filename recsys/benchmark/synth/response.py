"""The offer-response model of the ground truth: what one offer does to one user, in probabilities
and money.

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

The `shifted` world (`SynthParams.world`) changes the links, the fatigue and the net value of a
conversion as `SynthParams.world` documents.

`offer_response` is the one implementation, used to simulate and to evaluate (through
`recsys.benchmark.synth.truth.GroundTruth`, which gives it the users' traits and the actions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.benchmark.synth.params import SynthParams
from recsys.benchmark.synth.traits import Traits, link, norm_cdf


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


def offer_response(
    p: SynthParams,
    tr: Traits,
    focus: np.ndarray,
    idx: np.ndarray,
    typ: np.ndarray,
    val: np.ndarray,
    ch: np.ndarray,
    *,
    send_hour: np.ndarray,
    offers_last_7d: np.ndarray,
    weekday_factor: float,
) -> Response:
    """The response model on broadcastable arrays: user rows `idx` (of `tr` and their `focus`), offer
    type codes `typ` (OFFER_TYPES), values `val`, channel codes `ch` (CHANNELS), the local send hour,
    the offers k in the 7 nights before and the night's weekday factor of the open rate."""
    k = offers_last_7d
    click_gain, conv_gain = _gains(p, tr, focus, idx, typ, val)
    unsub = np.asarray(p.unsubscribe_per_open)[ch] * (1.0 + p.unsubscribe_fatigue * tr.fatigue[idx] * k)
    return Response(
        p_open=_open_probability(p, tr, idx, ch, send_hour, k, weekday_factor),
        p_click=link(p, np.asarray(p.click_logit)[ch] + click_gain),
        p_convert=link(p, p.conversion_logit + conv_gain),
        p_unsubscribe=np.minimum(unsub, 0.5),
        net_value=_net_value(p, tr, focus, idx, typ, val),
        contact_cost=np.asarray(p.contact_cost)[ch],
    )


def _open_probability(
    p: SynthParams,
    tr: Traits,
    idx: np.ndarray,
    ch: np.ndarray,
    send_hour: np.ndarray,
    k: np.ndarray,
    weekday_factor: float,
) -> np.ndarray:
    """P(open) = responsiveness on the channel x timing x exp(-fatigue k) x weekday, capped at 0.99."""
    distance = np.abs(np.mod(send_hour - tr.preferred_hour[idx] + 12.0, 24.0) - 12.0)
    timing = p.timing_floor + (1.0 - p.timing_floor) * np.exp(-0.5 * (distance / p.timing_width_hours) ** 2)
    load = k * (k + 1) / 4.0 if p.world == "shifted" else k  # hazard-type fatigue: it compounds
    p_open = tr.responsiveness[idx, ch] * timing * np.exp(-tr.fatigue[idx] * load) * weekday_factor
    return np.minimum(p_open, 0.99)


def _gains(
    p: SynthParams, tr: Traits, focus: np.ndarray, idx: np.ndarray, typ: np.ndarray, val: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Click-logit and conversion-logit gains of each offer for each user (the module docstring's table)."""
    ds = tr.discount_sensitivity[idx]
    fs = tr.free_shipping_preference[idx]
    ra = tr.recommendation_affinity[idx]
    ba = tr.bundle_affinity[idx]
    focus = focus[idx]
    tenth = val / 10.0
    fs_appeal = np.exp(-val / p.free_shipping_threshold_scale)
    ideal = p.recommendation_ideal_products[0] + (
        p.recommendation_ideal_products[1] - p.recommendation_ideal_products[0]
    ) * (1.0 - focus)
    fit = np.exp(-0.5 * ((val - ideal) / p.recommendation_fit_width) ** 2)
    click_gain = _per_type(
        typ,
        p.discount_click * ds * tenth,
        p.free_shipping_click * fs * fs_appeal,
        p.recommendation_click * ra * focus * fit,
        p.bundle_click * ba * tenth,
    )
    conv_gain = _per_type(
        typ,
        p.discount_convert * ds * tenth,
        p.free_shipping_convert * fs * fs_appeal,
        p.recommendation_convert * ra * focus,
        p.bundle_convert * ba,
    )
    return click_gain, conv_gain


def _net_value(
    p: SynthParams, tr: Traits, focus: np.ndarray, idx: np.ndarray, typ: np.ndarray, val: np.ndarray
) -> np.ndarray:
    """E[net | convert]: the margin on what the customer pays, after the offer's cost (module docstring)."""
    ra = tr.recommendation_affinity[idx]
    ba = tr.bundle_affinity[idx]
    focus = focus[idx]
    basket = tr.basket_mean[idx]
    m = p.margin_rate
    off = val / 100.0
    s = p.order_log_sd
    # Free shipping: E[max(G, v)] for log-normal G with mean `basket`.
    d = (np.log(val) - np.log(basket) + 0.5 * s * s) / s
    topped_up = val * norm_cdf(d) + basket * norm_cdf(s - d)
    net = _per_type(
        typ,
        basket * (m - off),
        m * topped_up - p.shipping_fee,
        basket * (1.0 + p.recommendation_basket_lift * ra * focus) * m,
        basket * (1.0 + p.bundle_basket_lift * ba) * (m - off),
    )
    if p.world == "shifted":  # part of the order would have come anyway, at full price
        share = np.minimum(p.cannibalisation_cap, p.cannibalisation_per_session_rate * tr.activity_rate[idx])
        net = net - share * basket * m
    return net


def _per_type(
    typ: np.ndarray, discount: np.ndarray, free_shipping: np.ndarray, recommendation: np.ndarray, bundle: np.ndarray
) -> np.ndarray:
    """Per offer, the value given for its type (codes of OFFER_TYPES; broadcast together)."""
    return np.where(typ == 0, discount, np.where(typ == 1, free_shipping, np.where(typ == 2, recommendation, bundle)))
