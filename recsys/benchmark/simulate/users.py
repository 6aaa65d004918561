"""Simulated users: respond to the offers sent, from the generator's truth, and live the day
(organic sessions and purchases) written as an events file for the next night's extract."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.benchmark.simulate.config import DAY, HOUR, epoch


@dataclass
class SentOffers:
    """The night's offers as the simulated sender sent them (parallel arrays)."""

    offer_id: np.ndarray
    user_id: np.ndarray
    action_id: np.ndarray
    sent_at: np.ndarray
    """Epoch seconds."""

    def __len__(self) -> int:
        return len(self.offer_id)


@dataclass
class Responses:
    """What the users did with the offers (parallel to `SentOffers`)."""

    offers: SentOffers
    idx: np.ndarray
    """Row of each user in the truth."""
    opened: np.ndarray
    clicked: np.ndarray
    converted: np.ndarray
    unsubscribed: np.ndarray
    open_at: np.ndarray
    click_at: np.ndarray
    buy_at: np.ndarray
    revenue_cents: np.ndarray

    def counts(self) -> dict[str, int]:
        return {
            "sent": len(self.offers),
            "opened": int(self.opened.sum()),
            "clicked": int(self.clicked.sum()),
            "converted": int(self.converted.sum()),
            "unsubscribed": int(self.unsubscribed.sum()),
            "offer_revenue": round(float(self.revenue_cents.sum()) / 100.0, 2),
        }

    def offer_events(self) -> tuple[list[int], list[str], list[dt.datetime], list[float | None]]:
        """Rows for `recsys.record_offer_event`: delivered, opened, clicked, converted, unsubscribed."""
        ids: list[np.ndarray] = []
        names: list[str] = []
        times: list[np.ndarray] = []
        revenue: list[np.ndarray] = []
        o = self.offers
        for name, where, when in (
            ("delivered", np.ones(len(o), bool), o.sent_at),
            ("opened", self.opened, self.open_at),
            ("clicked", self.clicked, self.click_at),
            ("converted", self.converted, self.buy_at),
            ("unsubscribed", self.unsubscribed, self.open_at),
        ):
            ids.append(o.offer_id[where])
            names.extend([name] * int(where.sum()))
            times.append(when[where])
            revenue.append(np.where(name == "converted", self.revenue_cents[where] / 100.0, np.nan))
        all_times = np.concatenate(times).astype("datetime64[s]").astype(object)
        rev = np.concatenate(revenue)
        return (
            np.concatenate(ids).astype(np.int64).tolist(),
            names,
            [t.replace(tzinfo=dt.UTC) for t in all_times],
            [None if math.isnan(r) else round(float(r), 2) for r in rev],
        )


def _best_hour_sends(truth: Any, idx: np.ndarray, action: np.ndarray, sent: np.ndarray, night: dt.date) -> Any:
    """Local send hours when some offers have the best_hour timing: those at the local hour they were
    actually sent (the SQL schedule: the user's learned hour, quiet hours), the others at the release
    + their delay as always; None (the truth's own hours) when there is none."""
    from recsys.benchmark.synth.clock import utc_offsets
    from recsys.benchmark.synth.params import TIMEZONES

    delay = truth.action_delay_hours[action]
    best = np.isnan(delay)
    if not best.any():
        return None
    offset = utc_offsets(TIMEZONES, night, 1)[truth.timezone[idx], 0]
    release = truth.release_local_hour(night)[idx] + np.nan_to_num(delay)
    return np.where(best, np.mod(sent + offset, DAY) / HOUR, release)


class SimulatedUsers:
    """The shop's customers, played from the generator's hidden truth.

    Keeps the consent the users really have (unsubscribes revoke it), draws their responses to the
    offers sent and their day of organic shopping, and writes that behaviour as input files.
    """

    def __init__(self, truth: Any, seed: int) -> None:
        self.truth = truth
        # The truth's consent is the users' real state; the simulation updates it on unsubscribes.
        self.consent = truth.consent
        streams = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, 0x51A]).spawn(3)]
        self._rng_response, self._rng_sessions, self._rng_events = streams
        self._next_session = 1_000_000_000
        self._next_event = 1
        self._pending: dict[str, np.ndarray] | None = None
        self.last_day_revenue: dict[int, float] = {}

    def respond(self, night: dt.date, offers: SentOffers, offers_last_7d: np.ndarray) -> Responses:
        """Draw each user's response to the offer sent, with the truth's probabilities."""
        from recsys.benchmark.synth.generate import _truncated_exponential

        truth = self.truth
        p = truth.params
        rng = self._rng_response
        idx = truth.index_of(offers.user_id)
        action = np.asarray(offers.action_id, dtype=np.int64)
        m = len(idx)
        sent = np.asarray(offers.sent_at, dtype=np.int64)
        resp = truth.response(
            idx,
            action,
            night=night,
            offers_last_7d=offers_last_7d,
            send_hour=_best_hour_sends(truth, idx, action, sent, night),
        )
        # An offer on a channel the user no longer consents to would not reach them.
        reached = self.consent[idx, truth.action_channel[action]] if m else np.zeros(0, bool)
        opened = reached & (rng.random(m) < resp.p_open)
        u = rng.random(m)
        clicked = opened & (u < resp.p_click)
        unsubscribed = opened & (u >= 1.0 - resp.p_unsubscribe) & ~clicked
        converted = clicked & (rng.random(m) < resp.p_convert)
        # Responses come within the generator's horizon (24 h) and, like the generator's, before the
        # end of the day (the next night's reference time), so the next night learns final outcomes
        # and sees every resulting event; an offer sent after midnight (moved by quiet hours) keeps
        # the full horizon and its events wait for a later night's file.
        next_midnight = epoch(night) + DAY
        room = np.where(sent < next_midnight, next_midnight - 1 - sent, p.response_horizon_hours * HOUR)
        window = np.clip(room, 60, p.response_horizon_hours * HOUR).astype(np.float64)
        open_at = sent + _truncated_exponential(rng, p.open_delay_mean_minutes * 60, 0.5 * window).astype(np.int64)
        click_at = open_at + _truncated_exponential(rng, p.click_delay_mean_minutes * 60, 0.1 * window).astype(np.int64)
        buy_at = click_at + _truncated_exponential(rng, p.purchase_delay_mean_minutes * 60, 0.2 * window).astype(
            np.int64
        )
        revenue = np.zeros(m, dtype=np.int64)
        if converted.any():
            paid = truth.sample_order(rng, idx[converted], action[converted])
            revenue[converted] = np.round(paid * 100).astype(np.int64)
        # An unsubscribe revokes that channel from then on.
        self.consent[idx[unsubscribed], truth.action_channel[action[unsubscribed]]] = False
        return Responses(offers, idx, opened, clicked, converted, unsubscribed, open_at, click_at, buy_at, revenue)

    def live_day(self, night: dt.date, responses: Responses) -> dict[str, np.ndarray]:
        """Every user's organic sessions of the day plus the sessions the offers' clicks started, as
        events (held until written to an input file). Returns revenue per user of the day's purchases."""
        from recsys.benchmark.synth import generate as g
        from recsys.benchmark.synth.clock import epoch_seconds, utc_offsets
        from recsys.benchmark.synth.params import TIMEZONES

        truth = self.truth
        start = epoch_seconds(night)
        offsets = utc_offsets(TIMEZONES, night, 1)
        organic = g._organic_sessions(self._rng_sessions, truth, self.consent, truth.timezone, offsets, start, 1)
        r = responses
        c = r.clicked
        users = r.idx[c]
        action = np.asarray(r.offers.action_id, dtype=np.int64)[c]
        typ = truth.action_type[action]
        conv = r.converted[c]
        offer_sessions = g._Sessions(
            user=users,
            start=r.click_at[c],
            channel=(2 + truth.action_channel[action]).astype(np.int8),
            kind=np.where(conv, g._CONVERTED, g._CLICKED).astype(np.int8),
            first_category=np.where(typ >= 2, truth.top_category()[users], -1).astype(np.int8),
            end=r.buy_at[c],
            amount_cents=r.revenue_cents[c],
            discount=np.where(conv, (typ == 0) | (typ == 3), -1).astype(np.int8),
            free_shipping=np.where(conv, typ == 1, -1).astype(np.int8),
        )
        sessions = g._Sessions.concat([organic, offer_sessions])
        ev = g._expand(self._rng_events, truth, sessions, start + 3 * DAY)
        s = ev["session"]
        n = len(s)
        events = {
            "event_id": np.arange(self._next_event, self._next_event + n, dtype=np.int64),
            "user_id": truth.user_ids[sessions.user[s]],
            "session_id": self._next_session + s,
            "time": ev["time"],
            "action": ev["action"].astype(np.int64),
            "category": ev["category"].astype(np.int64),
            "channel": sessions.channel[s].astype(np.int64),
            "amount_cents": ev["amount_cents"],
            "discount": ev["discount"].astype(np.int64),
            "free_shipping": ev["free_shipping"].astype(np.int64),
        }
        self._next_event += n
        self._next_session += len(sessions.user)
        self._pending = (
            events if self._pending is None else {k: np.concatenate([self._pending[k], v]) for k, v in events.items()}
        )
        buys = (events["action"] == 2) & (events["time"] < start + DAY)
        return {"user_id": events["user_id"][buys], "amount_cents": events["amount_cents"][buys]}

    def write_events(self, path: Path, until: int) -> int:
        """Write the held events before `until` (epoch seconds) as an events CSV; keep the rest."""
        from recsys.benchmark.synth import _write as w
        from recsys.benchmark.synth.generate import ACTIONS, EVENT_COLUMNS, SESSION_CHANNELS
        from recsys.benchmark.synth.params import CATEGORIES

        if self._pending is None:
            return 0
        ready = self._pending["time"] < until
        order = np.flatnonzero(ready)[np.argsort(self._pending["time"][ready], kind="stable")]
        rows = {k: v[order] for k, v in self._pending.items()}
        self._pending = {k: v[~ready] for k, v in self._pending.items()}
        n = len(order)

        def fields(lo: int, hi: int) -> list[np.ndarray]:
            sl = slice(lo, hi)
            cents = rows["amount_cents"][sl]
            return [
                w.prefixed("sim", rows["event_id"][sl]),
                w.digits(rows["user_id"][sl]),
                w.prefixed("s", rows["session_id"][sl]),
                w.timestamps(rows["time"][sl]),
                w.lookup(ACTIONS, rows["action"][sl]),
                w.lookup(CATEGORIES, rows["category"][sl]),
                w.lookup(SESSION_CHANNELS, rows["channel"][sl]),
                w.money(cents, cents < 0),
                w.booleans(rows["discount"][sl]),
                w.booleans(rows["free_shipping"][sl]),
            ]

        tmp = path.with_name(f".{path.name}.tmp")
        w.write_csv(tmp, EVENT_COLUMNS, n, fields)
        tmp.replace(path)  # the inbox never sees a half-written file
        return n
