"""The logged offers the response model learns from, as arrays, and the bounded sample a night's fit
reads (`bounded_sample`). Pure numpy: `recsys.data.logged_offers` loads them from the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np


@dataclass
class LoggedOffers:
    """Logged offers before a date, with the observation the system had when each was sent."""

    user_id: np.ndarray
    send_day: np.ndarray  # int days since 1970-01-01 of features_as_of
    obs: np.ndarray  # (n, N_FEATURES) float64, normalised
    type_idx: np.ndarray
    value: np.ndarray
    channel_idx: np.ndarray
    timing_idx: np.ndarray
    outcomes: dict[str, np.ndarray]  # opened, clicked, converted (, unsubscribed): 1.0 / 0.0 / nan
    revenue: np.ndarray
    usable: np.ndarray  # bool: has features and an action of the catalog's types, channels, timings
    counts: dict[str, int] = field(default_factory=dict)
    window: dict[str, str | None] = field(default_factory=dict)
    weight: np.ndarray | None = None  # float64: each offer's weight in the fit (None: all 1)

    def weights(self) -> np.ndarray:
        return np.ones(len(self.user_id)) if self.weight is None else self.weight

    def take(self, rows: np.ndarray, weight: np.ndarray) -> LoggedOffers:
        """The offers at `rows` (indices), with weights `weight`; counts and window stay."""
        return LoggedOffers(
            user_id=self.user_id[rows],
            send_day=self.send_day[rows],
            obs=self.obs[rows],
            type_idx=self.type_idx[rows],
            value=self.value[rows],
            channel_idx=self.channel_idx[rows],
            timing_idx=self.timing_idx[rows],
            outcomes={k: v[rows] for k, v in self.outcomes.items()},
            revenue=self.revenue[rows],
            usable=self.usable[rows],
            counts=dict(self.counts),
            window=dict(self.window),
            weight=weight,
        )


def bounded_sample(
    logs: LoggedOffers, as_of: date, *, max_offers: int | None, recent_days: int, seed: int
) -> tuple[LoggedOffers, dict[str, Any]]:
    """The usable offers a fit learns from, at most `max_offers`, and what was kept.

    Under the bound (or with None): every usable offer, with its weight. Over it: every offer sent in the
    `recent_days` days before `as_of`, and a uniform random sample (by `seed`) of the older ones that
    fills the bound, each weighted by the inverse of its sampling rate, so that a weighted sum over
    the sample is an unbiased estimate of the sum over all. When the recent offers alone exceed the
    bound: one uniform sample of all of them.

    Offers that arrive weighted (`logs.weight`: the read was itself a sample, drawn in the
    database) keep their weight, multiplied by this sample's own."""
    usable = np.flatnonzero(logs.usable)
    base = logs.weights()
    cap = max_offers
    if cap is None or len(usable) <= cap:
        return logs.take(usable, base[usable]), {"bounded": False, "offers": len(usable)}
    recent_from = (as_of - timedelta(days=recent_days) - date(1970, 1, 1)).days
    is_recent = logs.send_day[usable] >= recent_from
    recent, older = usable[is_recent], usable[~is_recent]
    rng = np.random.default_rng(seed)
    if len(recent) >= cap:  # the recent days alone fill the bound: one uniform sample of everything
        keep = np.sort(rng.choice(usable, cap, replace=False))
        rate = cap / len(usable)
        kept_recent, kept_older = int(np.isin(keep, recent).sum()), int(np.isin(keep, older).sum())
        weight = np.full(cap, 1.0 / rate)
    else:
        kept_older = cap - len(recent)
        rate = kept_older / len(older)
        sample = np.sort(rng.choice(older, kept_older, replace=False))
        keep = np.concatenate([sample, recent])
        kept_recent = len(recent)
        weight = np.concatenate([np.full(kept_older, 1.0 / rate), np.ones(len(recent))])
    weight = weight * base[keep]
    older_base = float(base[older[0]]) if len(older) else 1.0
    recent_base = float(base[recent[0]]) if len(recent) else 1.0
    order = np.argsort(keep, kind="stable")
    report = {
        "bounded": True,
        "offers": len(usable),
        "max_offers": cap,
        "recent_days": recent_days,
        "recent": len(recent),
        "recent_kept": kept_recent,
        "older": len(older),
        "older_kept": kept_older,
        "older_weight": round(older_base / rate, 6),
        "recent_weight": recent_base if len(recent) < cap else round(recent_base / rate, 6),
    }
    return logs.take(keep[order], weight[order]), report
