"""Shopping sessions and their events: the organic sessions of every user, the sessions offer clicks
start, and the views, add-to-carts and purchases each session expands into.

- Organic sessions: Poisson(activity rate x days) per user, each on a uniform day, starting at a
  local hour ~ N(preferred hour, 2.5^2) wrapped to the day. What brought the session: see
  `GroundTruth.session_channel_probabilities`.
- Events of a session: 1 + Poisson(2.6) views (categories drawn from the user's affinities), each
  view turns into an add-to-cart with probability 0.12 (of one of the session's viewed categories),
  and an organic session with a cart ends in a purchase with probability 0.4 (the last cart's
  category, an order value drawn from the user's basket; discount and free-shipping flags with
  probabilities rising with the traits). Events are spaced by exponential gaps of mean 50 s.
- A click on an offer starts a session brought by the offer's channel whose first view is the
  offer's category (the favourite category for recommendation and bundle offers); a conversion ends
  it with the purchase whose amount is the offer's `revenue` and whose `discount_used` /
  `free_shipping_used` say which offer was used.

Used by the generator (`recsys.benchmark.synth.world`, `recsys.benchmark.synth.campaigns`) and, through
the names `recsys.benchmark.synth.generate` keeps for it, by `recsys.benchmark.simulate`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from recsys.benchmark.synth.clock import DAY, HOUR
from recsys.benchmark.synth.truth import GroundTruth

ACTIONS = ("view", "add_to_cart", "purchase")
"""Event actions, by their code."""
SESSION_CHANNELS = ("web", "app", "email", "sms", "push")
"""What brought a session, by its code (2 + the index in CHANNELS for a message channel)."""

# Session kinds: organic, an offer click that converts, an offer click that does not.
ORGANIC, CONVERTED, CLICKED = 0, 1, 2
MAX_VIEWS = 40


@dataclass
class Sessions:
    """Sessions before expansion into events (parallel arrays)."""

    user: np.ndarray
    start: np.ndarray
    channel: np.ndarray
    kind: np.ndarray
    first_category: np.ndarray
    end: np.ndarray
    amount_cents: np.ndarray
    discount: np.ndarray
    free_shipping: np.ndarray

    @classmethod
    def concat(cls, parts: list[Sessions]) -> Sessions:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)})


def organic_sessions(
    rng: np.random.Generator,
    truth: GroundTruth,
    consent: np.ndarray,
    tz: np.ndarray,
    offsets: np.ndarray,
    window_start: int,
    days: int,
) -> Sessions:
    """Organic sessions of every user over the window (see the module docstring)."""
    p = truth.params
    count = rng.poisson(truth.session_rate() * days)
    user = np.repeat(np.arange(len(count)), count)
    m = len(user)
    day = rng.integers(0, days, size=m)
    local_hour = np.mod(truth.session_hour()[user] + rng.normal(0.0, p.session_hour_sd, size=m), 24.0)
    local_sec = (local_hour * HOUR).astype(np.int64)
    # The session's local time of day, placed on UTC day `day` (so it stays inside the window).
    sec_of_day = np.mod(local_sec - offsets[tz[user], day], DAY)
    start = window_start + day * DAY + sec_of_day
    probs = truth.session_channel_probabilities(consent)[user]
    channel = (rng.random(m)[:, None] > np.cumsum(probs, axis=1)[:, :-1]).sum(axis=1).astype(np.int8)
    return Sessions(
        user=user,
        start=start,
        channel=channel,
        kind=np.full(m, ORGANIC, dtype=np.int8),
        first_category=np.full(m, -1, dtype=np.int8),
        end=np.zeros(m, dtype=np.int64),
        amount_cents=np.full(m, -1, dtype=np.int64),
        discount=np.full(m, -1, dtype=np.int8),
        free_shipping=np.full(m, -1, dtype=np.int8),
    )


def _draw_categories(rng: np.random.Generator, cdf: np.ndarray, users: np.ndarray) -> np.ndarray:
    out = np.empty(len(users), dtype=np.int8)
    step = 1_000_000
    for lo in range(0, len(users), step):
        u = users[lo : lo + step]
        r = rng.random(len(u))
        out[lo : lo + step] = np.minimum((r[:, None] > cdf[u]).sum(axis=1), cdf.shape[1] - 1)
    return out


def session_events(rng: np.random.Generator, truth: GroundTruth, s: Sessions, end: int) -> dict[str, np.ndarray]:
    """Events of the sessions: views, add-to-carts, a purchase; grouped by session, in time order."""
    p = truth.params
    n = len(s.user)
    views = np.minimum(1 + rng.poisson(p.extra_views_mean, size=n), MAX_VIEWS)
    carts = rng.binomial(views, p.cart_per_view)
    converted = s.kind == CONVERTED
    carts = np.where(converted, np.maximum(carts, 1), carts)
    buys = converted | ((s.kind == ORGANIC) & (carts > 0) & (rng.random(n) < p.purchase_given_cart))
    n_ev = views + carts + buys
    first = np.cumsum(n_ev) - n_ev
    total = int(n_ev.sum())
    session = np.repeat(np.arange(n), n_ev)
    pos = np.arange(total) - first[session]
    nv = views[session]
    action = np.where(pos < nv, 0, np.where(pos < nv + carts[session], 1, 2)).astype(np.int8)

    user = s.user[session]
    category = _draw_categories(rng, truth.category_cdf(), user)
    forced = s.first_category[session]
    category = np.where((pos == 0) & (forced >= 0), forced, category)
    is_cart = action == 1
    pick = first[session[is_cart]] + (rng.random(int(is_cart.sum())) * nv[is_cart]).astype(np.int64)
    cart_cat = category[pick]
    cart_forced = forced[is_cart]
    category[is_cart] = np.where(cart_forced >= 0, cart_forced, cart_cat)
    is_buy = action == 2
    category[is_buy] = category[np.flatnonzero(is_buy) - 1]

    gap = rng.exponential(p.event_gap_seconds, size=total)
    gap[pos == 0] = 0.0
    cum = np.cumsum(gap)
    offset = cum - cum[first][session]
    last = offset[first + n_ev - 1]
    conv_span = (s.end - s.start).astype(np.float64)
    room = (end - 1 - s.start).astype(np.float64)
    scale = np.where(
        converted, conv_span / np.maximum(last, 1e-9), np.where(last > room, room / np.maximum(last, 1e-9), 1.0)
    )
    when = s.start[session] + np.floor(offset * scale[session]).astype(np.int64)
    when = np.where(is_buy & converted[session], s.end[session], when)

    amount = np.full(total, -1, dtype=np.int64)
    discount = np.full(total, -1, dtype=np.int8)
    free_ship = np.full(total, -1, dtype=np.int8)
    buy_idx = np.flatnonzero(is_buy)
    buy_sess = session[buy_idx]
    organic_buy = ~converted[buy_sess]
    org_users = s.user[buy_sess[organic_buy]]
    organic_amount = np.round(truth.sample_order(rng, org_users) * 100).astype(np.int64)
    p_disc, p_fs = truth.organic_flag_probabilities()
    org_disc = (rng.random(len(org_users)) < p_disc[org_users]).astype(np.int8)
    org_fs = (rng.random(len(org_users)) < p_fs[org_users]).astype(np.int8)
    amount[buy_idx] = s.amount_cents[buy_sess]
    discount[buy_idx] = s.discount[buy_sess]
    free_ship[buy_idx] = s.free_shipping[buy_sess]
    amount[buy_idx[organic_buy]] = organic_amount
    discount[buy_idx[organic_buy]] = org_disc
    free_ship[buy_idx[organic_buy]] = org_fs
    return {
        "session": session,
        "time": when,
        "action": action,
        "category": category,
        "amount_cents": amount,
        "discount": discount,
        "free_shipping": free_ship,
    }


def click_sessions(
    truth: GroundTruth,
    users: np.ndarray,
    action: np.ndarray,
    click_at: np.ndarray,
    buy_at: np.ndarray,
    converted: np.ndarray,
    revenue_cents: np.ndarray,
    top_category: np.ndarray,
) -> Sessions:
    """The sessions started by clicks on offers (one per clicked offer; arrays over those offers).

    `top_category` is every user's favourite category (`truth.top_category()`), the first view of a
    recommendation or bundle offer's session.
    """
    typ = truth.action_type[action]
    return Sessions(
        user=users,
        start=click_at,
        channel=(2 + truth.action_channel[action]).astype(np.int8),
        kind=np.where(converted, CONVERTED, CLICKED).astype(np.int8),
        first_category=np.where(typ >= 2, top_category[users], -1).astype(np.int8),
        end=buy_at,
        amount_cents=revenue_cents,
        discount=np.where(converted, (typ == 0) | (typ == 3), -1).astype(np.int8),
        free_shipping=np.where(converted, typ == 1, -1).astype(np.int8),
    )
