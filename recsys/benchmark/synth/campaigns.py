"""The past campaigns of the synthetic shop: one campaign per night, replayed with a documented
randomised logging policy whose outcomes come from the truth's response model.

- Campaigns, one per night d in the window: each user who consents to at least one catalog channel
  gets an offer with probability 0.15. The action is drawn from the logging policy
      pi(a | user, d) = 0.5 / |allowed| + 0.5 * [a == rule(user, d)]
  where `allowed` = every catalog action on a channel the user consents to at that moment, and
  `rule` = (recommendation if the user purchased in the 30 days before d 00:00 UTC else discount,
  the middle catalog value, the first consented channel in the order email, push, sms, the first
  catalog timing). The `propensity` column is exactly pi of the action sent.
- An offer is sent at release + the timing's delay, release = max(09:00 local on d, 01:00 UTC on d);
  a best_hour offer at the next occurrence of the user's best hour (`GroundTruth.best_send_hour`)
  at or after the later of local midnight on d and 01:00 UTC on d.
  Opened / clicked / unsubscribed / converted are drawn from `GroundTruth.response` with k = offers
  the user got in the 7 nights before d. Opens come after an exponential delay (mean 45 min), clicks
  3 min after the open, purchases 12 min after the click, all truncated to the attribution window
  (24 h) and the data window. An unsubscribe revokes the channel's consent at the open (the user row's
  `updated_at` moves there). A click starts a session (`recsys.benchmark.synth.sessions.click_sessions`).

Called by `recsys.benchmark.synth.world.simulate`; `truncated_exponential` also by
`recsys.benchmark.simulate` (through `recsys.benchmark.synth.generate`).
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import dataclass

import numpy as np

from recsys.benchmark.synth.clock import DAY, HOUR, Window, release_seconds
from recsys.benchmark.synth.params import CHANNELS, SynthParams
from recsys.benchmark.synth.sessions import Sessions, click_sessions
from recsys.benchmark.synth.truth import GroundTruth, Response
from recsys.config.catalog import Catalog


def truncated_exponential(rng: np.random.Generator, mean: float, upper: np.ndarray) -> np.ndarray:
    """Exponential(mean) draws conditioned on being below `upper` (inverse CDF, exact)."""
    u = rng.random(len(upper))
    return -mean * np.log1p(-u * (-np.expm1(-upper / mean)))


@dataclass(frozen=True)
class LoggingPolicy:
    """The logging policy of the past campaigns (module docstring) over the catalog's action ids."""

    params: SynthParams
    n_types: int
    n_values: int
    n_channels: int
    n_timings: int
    order: list[int]
    """Catalog channel indices in the rule's order of preference."""
    recent_type: int
    """The rule's offer type for a recent buyer."""
    other_type: int
    """The rule's offer type for everyone else."""

    @classmethod
    def of(cls, catalog: Catalog, params: SynthParams) -> LoggingPolicy:
        p = params
        n_channels = len(catalog.channels)
        order = [catalog.channels.index(c) for c in p.rule_channel_order if c in catalog.channels]
        order += [i for i in range(n_channels) if i not in order]
        types = catalog.offer_types
        return cls(
            params=p,
            n_types=len(types),
            n_values=len(catalog.values),
            n_channels=n_channels,
            n_timings=len(catalog.timings),
            order=order,
            recent_type=types.index(p.rule_recent_buyer_offer) if p.rule_recent_buyer_offer in types else 0,
            other_type=types.index(p.rule_other_offer) if p.rule_other_offer in types else 0,
        )

    def _action_id(
        self, typ: np.ndarray, value: np.ndarray | int, channel: np.ndarray, timing: np.ndarray | int
    ) -> np.ndarray:
        return ((typ * self.n_values + value) * self.n_channels + channel) * self.n_timings + timing

    def rule(self, allowed: np.ndarray, recent: np.ndarray) -> np.ndarray:
        """The rule's action per user: `allowed` (users, catalog channels) consent, `recent` bought lately."""
        rule_type = np.where(recent, self.recent_type, self.other_type)
        rule_channel = np.full(len(allowed), -1, dtype=np.int64)
        for c in reversed(self.order):
            rule_channel = np.where(allowed[:, c], c, rule_channel)
        return self._action_id(rule_type, self.n_values // 2, rule_channel, 0)

    def draw(self, rng: np.random.Generator, allowed: np.ndarray, recent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An action per user drawn from the policy, and its propensity (see `rule` for the arguments)."""
        p = self.params
        m = len(allowed)
        n_allowed = allowed.sum(axis=1)
        rule_action = self.rule(allowed, recent)
        uniform = rng.random(m) < p.uniform_share
        r = (rng.random(m) * n_allowed).astype(np.int64)
        u_channel = (np.cumsum(allowed, axis=1) > r[:, None]).argmax(axis=1)
        u_type = rng.integers(0, self.n_types, size=m)
        u_value = rng.integers(0, self.n_values, size=m)
        u_timing = rng.integers(0, self.n_timings, size=m)
        u_action = self._action_id(u_type, u_value, u_channel, u_timing)
        action = np.where(uniform, u_action, rule_action)
        per_channel = self.n_types * self.n_values * self.n_timings
        propensity = p.uniform_share / (per_channel * n_allowed) + (1.0 - p.uniform_share) * (action == rule_action)
        return action, propensity


@dataclass(frozen=True)
class Outcomes:
    """What became of each offer sent, and when (epoch seconds)."""

    opened: np.ndarray
    clicked: np.ndarray
    unsubscribed: np.ndarray
    converted: np.ndarray
    open_at: np.ndarray
    click_at: np.ndarray
    buy_at: np.ndarray


def draw_outcomes(
    rng: np.random.Generator, resp: Response, sent_at: np.ndarray, window: np.ndarray, params: SynthParams
) -> Outcomes:
    """Draw the outcomes of offers sent at `sent_at` with probabilities `resp`, all within `window`
    seconds after sending; an open leads to a click or an unsubscribe, never both."""
    p = params
    m = len(sent_at)
    opened = rng.random(m) < resp.p_open
    u = rng.random(m)
    clicked = opened & (u < resp.p_click)
    unsubscribed = opened & (u >= 1.0 - resp.p_unsubscribe) & ~clicked
    converted = clicked & (rng.random(m) < resp.p_convert)
    open_at = sent_at + truncated_exponential(rng, p.open_delay_mean_minutes * 60, 0.5 * window).astype(np.int64)
    click_at = open_at + truncated_exponential(rng, p.click_delay_mean_minutes * 60, 0.1 * window).astype(np.int64)
    buy_at = click_at + truncated_exponential(rng, p.purchase_delay_mean_minutes * 60, 0.2 * window).astype(np.int64)
    return Outcomes(opened, clicked, unsubscribed, converted, open_at, click_at, buy_at)


class _LastPurchase:
    """When each user last bought as the rule knows it at a night's 00:00 UTC: organic purchases
    (`buy_time` sorted, `buy_user`) and those of converted offers, once they have happened."""

    def __init__(self, n: int, buy_time: np.ndarray, buy_user: np.ndarray) -> None:
        self.time = np.full(n, np.iinfo(np.int64).min // 2, dtype=np.int64)
        self._buy_time, self._buy_user = buy_time, buy_user
        self._ptr = 0
        self._pending_time = np.zeros(0, dtype=np.int64)
        self._pending_user = np.zeros(0, dtype=np.int64)

    def advance(self, night_start: int) -> None:
        """Take in every purchase before `night_start`."""
        stop = int(np.searchsorted(self._buy_time, night_start, side="left"))
        np.maximum.at(self.time, self._buy_user[self._ptr : stop], self._buy_time[self._ptr : stop])
        self._ptr = stop
        due = self._pending_time < night_start
        np.maximum.at(self.time, self._pending_user[due], self._pending_time[due])
        self._pending_time, self._pending_user = self._pending_time[~due], self._pending_user[~due]

    def add(self, times: np.ndarray, users: np.ndarray) -> None:
        """Purchases of converted offers, known from the first night that starts after them."""
        self._pending_time = np.concatenate([self._pending_time, times])
        self._pending_user = np.concatenate([self._pending_user, users])


class _RecentOffers:
    """Offers per user in the last 7 nights (the fatigue count k)."""

    def __init__(self, n: int) -> None:
        self.counts = np.zeros(n, dtype=np.int16)
        self._history: deque[np.ndarray] = deque()

    def add(self, idx: np.ndarray) -> None:
        """One more night, with offers to users `idx`."""
        self.counts[idx] += 1
        self._history.append(idx)
        if len(self._history) > 7:
            self.counts[self._history.popleft()] -= 1


class CampaignReplay:
    """One campaign per night of `window` with the logging policy (module docstring), and the state
    carried from night to night.

    `buy_time` (sorted) and `buy_user` are the organic purchases. The replay updates `consent` and
    `updated_at` in place.
    """

    def __init__(
        self,
        truth: GroundTruth,
        consent: np.ndarray,
        updated_at: np.ndarray,
        window: Window,
        buy_time: np.ndarray,
        buy_user: np.ndarray,
    ) -> None:
        cat = truth.catalog
        n = len(truth.timezone)
        self.truth, self.consent, self.updated_at, self.window = truth, consent, updated_at, window
        self.policy = LoggingPolicy.of(cat, truth.params)
        self.channel_cols = np.array([CHANNELS.index(c) for c in cat.channels])
        self.top_category = truth.top_category()
        self.best_hour = np.isnan(truth.action_delay_hours)
        self.delay_sec = (np.nan_to_num(truth.action_delay_hours) * HOUR).astype(np.int64)
        self.last_purchase = _LastPurchase(n, buy_time, buy_user)
        self.recent = _RecentOffers(n)

    def run(self, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], Sessions]:
        """Every night's offers: their columns (user rows, not ids) and the sessions their clicks start."""
        rows: list[dict[str, np.ndarray]] = []
        sessions: list[Sessions] = []
        for j in range(self.window.days):
            offers, clicks = self.night(rng, j)
            rows.append(offers)
            sessions.append(clicks)
        return {key: np.concatenate([r[key] for r in rows]) for key in rows[0]}, Sessions.concat(sessions)

    def night(self, rng: np.random.Generator, j: int) -> tuple[dict[str, np.ndarray], Sessions]:
        """The offers of night `j` of the window (output columns) and the sessions their clicks start."""
        truth, p = self.truth, self.truth.params
        night_start = self.window.start + j * DAY
        # What the rule knows: purchases before the night's 00:00 UTC.
        self.last_purchase.advance(night_start)
        allowed_all = self.consent[:, self.channel_cols]
        sent = allowed_all.any(axis=1) & (rng.random(len(allowed_all)) < p.send_share)
        idx = np.flatnonzero(sent)
        recent = self.last_purchase.time[idx] >= night_start - p.recent_buyer_days * DAY
        action, propensity = self.policy.draw(rng, allowed_all[idx], recent)
        sent_at, resp = self._send(idx, action, j)
        window = np.minimum(p.response_horizon_hours * HOUR, self.window.end - 1 - sent_at).astype(np.float64)
        out = draw_outcomes(rng, resp, sent_at, window, p)
        self._unsubscribe(idx, action, out)
        revenue = self._revenue(rng, idx, action, out)
        c = out.clicked
        clicks = click_sessions(
            truth, idx[c], action[c], out.click_at[c], out.buy_at[c], out.converted[c], revenue[c], self.top_category
        )
        self.recent.add(idx)
        offers = {
            "user": idx,
            "sent_at": sent_at,
            "action": action,
            "propensity": propensity,
            "opened": out.opened,
            "clicked": out.clicked,
            "converted": out.converted,
            "revenue_cents": revenue,
        }
        return offers, clicks

    def _send(self, idx: np.ndarray, action: np.ndarray, j: int) -> tuple[np.ndarray, Response]:
        """When the offers go out (release + the timing's delay) and the truth's response to them."""
        truth, p = self.truth, self.truth.params
        night_start = self.window.start + j * DAY
        offset = self.window.offsets[truth.timezone[idx], j]
        release = release_seconds(offset, night_start, p.release_hour_local, p.publish_hour_utc)
        release_hour = np.zeros(len(truth.timezone))
        release_hour[idx] = (release - night_start + offset) / HOUR
        night = self.window.first_date + dt.timedelta(days=j)
        k = self.recent.counts[idx]
        resp = truth.response(idx, action, night=night, offers_last_7d=k, release_hour=release_hour)
        sent_at = release + self.delay_sec[action]
        best = self.best_hour[action]
        if best.any():
            # best_hour: the next best hour at or after the later of the local midnight and the publish
            start = np.maximum(night_start - offset, night_start + round(p.publish_hour_utc * HOUR))
            at = night_start - offset + np.round(truth.best_send_hour[idx] * HOUR).astype(np.int64)
            sent_at = np.where(best, np.where(at < start, at + DAY, at), sent_at)
        return sent_at, resp

    def _unsubscribe(self, idx: np.ndarray, action: np.ndarray, out: Outcomes) -> None:
        """An unsubscribe revokes that channel from the open on."""
        un = idx[out.unsubscribed]
        self.consent[un, self.channel_cols[self.truth.action_channel[action[out.unsubscribed]]]] = False
        self.updated_at[un] = out.open_at[out.unsubscribed]

    def _revenue(self, rng: np.random.Generator, idx: np.ndarray, action: np.ndarray, out: Outcomes) -> np.ndarray:
        """Cents paid per offer (0 unless converted); the purchases become known to the rule."""
        converted = out.converted
        revenue = np.zeros(len(idx), dtype=np.int64)
        conv_idx = idx[converted]
        paid = self.truth.sample_order(rng, conv_idx, action[converted])
        revenue[converted] = np.round(paid * 100).astype(np.int64)
        self.last_purchase.add(out.buy_at[converted], conv_idx)
        return revenue
