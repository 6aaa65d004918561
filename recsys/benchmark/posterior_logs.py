"""What the logs show per user, for the posterior ceiling (`recsys.benchmark.posterior`): the behaviour
events, the logged offers and their outcomes, the users' consent and time zones, read through
`sql/benchmark/posterior_*.sql` as of a date and aligned with the users being valued. Never the
truth's traits.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from recsys.benchmark.synth.params import CATEGORIES, CHANNELS, OFFER_TYPES, TIMEZONES
from recsys.config.settings import package_dir
from recsys.db import Connection
from recsys.db.sqlfiles import load_sql

SESSION_CHANNELS = ("web", "app", *CHANNELS)
"""What brings an organic session, in the order of `GroundTruth.session_channel_probabilities`."""


@dataclass
class Observed:
    """What the logs show, per user (arrays aligned with `user_ids`) and per logged offer / session."""

    user_ids: np.ndarray
    consent: np.ndarray
    """(n, 3) bool opt-in per channel (the users row)."""
    timezone: np.ndarray
    """int8 index into TIMEZONES (UTC when unknown)."""
    days: float
    """Length of the data window in days (first event to the as-of date)."""
    view_counts: np.ndarray
    """(n, len(CATEGORIES)) product views per category."""
    session_user: np.ndarray
    """Row of each organic session (not following an offer click)."""
    session_hour: np.ndarray
    session_channel: np.ndarray
    """Index into SESSION_CHANNELS."""
    organic_orders: np.ndarray
    organic_sum_log_amount: np.ndarray
    organic_discount: np.ndarray
    organic_free_shipping: np.ndarray
    offer_user: np.ndarray
    """Row of each logged offer's user (sorted)."""
    offer_type: np.ndarray
    offer_value: np.ndarray
    offer_channel: np.ndarray
    offer_hour: np.ndarray
    """Local send hour."""
    offer_k: np.ndarray
    """The user's offers in the 7 nights before the offer's night (fatigue count)."""
    offer_weekday: np.ndarray
    opened: np.ndarray
    clicked: np.ndarray
    converted: np.ndarray

    @property
    def n(self) -> int:
        return len(self.user_ids)

    @property
    def organic_sessions(self) -> np.ndarray:
        return np.bincount(self.session_user, minlength=self.n)


def _rows(conn: Connection, name: str, as_of: dt.date) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(load_sql(package_dir("sql"), f"benchmark/{name}"), {"as_of": as_of})
        return cur.fetchall()


def _codes(values: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Index of each value in `names` (-1 when it is none of them)."""
    lookup = {name: i for i, name in enumerate(names)}
    return np.array([lookup.get(v, -1) for v in values], dtype=np.int64)


def _row_of(user_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row of each id in the sorted `user_ids`, -1 when absent."""
    pos = np.minimum(np.searchsorted(user_ids, ids), len(user_ids) - 1)
    return np.where(user_ids[pos] == ids, pos, -1)


def load_observed(conn: Connection, as_of: dt.date, user_ids: np.ndarray) -> Observed:
    """What the database shows of `user_ids` (sorted) before `as_of` 00:00 UTC."""
    ids = np.asarray(user_ids, dtype=np.int64)
    n = len(ids)
    users = np.array(_rows(conn, "posterior_users", as_of), dtype=object).reshape(-1, 5)
    row = _row_of(ids, users[:, 0].astype(np.int64))
    keep = row >= 0
    consent = np.zeros((n, 3), dtype=bool)
    consent[row[keep]] = users[keep, 1:4].astype(bool)
    timezone = np.full(n, TIMEZONES.index("UTC"), dtype=np.int8)
    tz = _codes(users[keep, 4], TIMEZONES)
    timezone[row[keep]] = np.where(tz >= 0, tz, TIMEZONES.index("UTC"))

    views = np.array(_rows(conn, "posterior_views", as_of), dtype=object).reshape(-1, 3)
    row, cat = _row_of(ids, views[:, 0].astype(np.int64)), _codes(views[:, 1], CATEGORIES)
    keep = (row >= 0) & (cat >= 0)
    view_counts = np.zeros((n, len(CATEGORIES)))
    np.add.at(view_counts, (row[keep], cat[keep]), views[keep, 2].astype(np.float64))

    sessions = np.array(_rows(conn, "posterior_sessions", as_of), dtype=object).reshape(-1, 4)
    s_row, channel = _row_of(ids, sessions[:, 0].astype(np.int64)), _codes(sessions[:, 1], SESSION_CHANNELS)
    organic = (s_row >= 0) & (channel >= 0) & ~sessions[:, 3].astype(bool)

    offers = np.array(_rows(conn, "posterior_offers", as_of), dtype=object).reshape(-1, 11)
    o_row = _row_of(ids, offers[:, 0].astype(np.int64))
    o_type, o_channel = _codes(offers[:, 1], OFFER_TYPES), _codes(offers[:, 2], CHANNELS)
    keep = (o_row >= 0) & (o_type >= 0) & (o_channel >= 0)
    offers, o_row, o_type, o_channel = offers[keep], o_row[keep], o_type[keep], o_channel[keep]
    night = offers[:, 8].astype(np.int64)
    converted = offers[:, 6].astype(bool)
    revenue = offers[:, 7].astype(np.float64)

    purchases = np.array(_rows(conn, "posterior_purchases", as_of), dtype=object).reshape(-1, 5)
    row = _row_of(ids, purchases[:, 0].astype(np.int64))
    keep = row >= 0
    per_user = np.zeros((n, 4))
    per_user[row[keep]] = purchases[keep, 1:].astype(np.float64)
    # the purchases of converted offers: their amount is the revenue, their flags the offer's type
    conv_log = np.bincount(o_row[converted], np.log(np.maximum(revenue[converted], 0.01)), minlength=n)
    conv_n = np.bincount(o_row[converted], minlength=n)
    conv_disc = np.bincount(o_row[converted & ((o_type == 0) | (o_type == 3))], minlength=n)
    conv_fs = np.bincount(o_row[converted & (o_type == 1)], minlength=n)
    first_day = _rows(conn, "posterior_first_day", as_of)[0][0]
    return Observed(
        user_ids=ids,
        consent=consent,
        timezone=timezone,
        days=float(max((as_of - first_day).days, 1)) if first_day is not None else 1.0,
        view_counts=view_counts,
        session_user=s_row[organic],
        session_hour=sessions[organic, 2].astype(np.float64),
        session_channel=channel[organic],
        organic_orders=np.maximum(per_user[:, 0] - conv_n, 0.0),
        organic_sum_log_amount=per_user[:, 1] - conv_log,
        organic_discount=np.maximum(per_user[:, 2] - conv_disc, 0.0),
        organic_free_shipping=np.maximum(per_user[:, 3] - conv_fs, 0.0),
        offer_user=o_row,
        offer_type=o_type,
        offer_value=offers[:, 3].astype(np.float64),
        offer_channel=o_channel,
        offer_hour=offers[:, 10].astype(np.float64),
        offer_k=_offers_in_nights_before(o_row, night, 7),
        offer_weekday=offers[:, 9].astype(np.int64),
        opened=offers[:, 4].astype(bool),
        clicked=offers[:, 5].astype(bool),
        converted=converted,
    )


def _offers_in_nights_before(user: np.ndarray, night: np.ndarray, nights: int) -> np.ndarray:
    """For each offer, the same user's offers on the `nights` nights before its night."""
    key = user * 1_000_000 + (night - night.min() if len(night) else night)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    lo = np.searchsorted(sorted_key, key - nights, side="left")
    hi = np.searchsorted(sorted_key, key, side="left")
    return (hi - lo).astype(np.float64)
