"""Valuation over a fixed cohort, and the reference policies' own closed loops under the truth.

**The cohort** is the users active on night 1: every user with features as of the first night (the
users the first nightly run scored). Each of them is valued on every night, `nights x users`:

- the policy's value on a night is the truth's expected value of the offer sent to that user (the
  per-night table's valuation, `values.value_users`), and **0** when the user got no offer: held
  out, rested (a `no_offer` decision sends nothing), skipped by a rule, or unsubscribed. An offer to
  a channel the user has left is worth 0 too (`respect_consent`). Nobody is ever missing, so a
  policy that stops contacting users cannot look better by shrinking its denominator.
- Each reference policy runs **its own closed loop** under the truth, from the same start (the
  cohort's consent with an address on night 1, as scoring read it, and the offers each user got on
  the 7 nights before night 1), with its own fatigue (the truth's `offers_last_7d`, counting only
  its own sends from night 1 on), its own unsubscribes, the same frequency cap (no send when the
  user already had `cap` offers in the 7 nights before) and the policy's holdout of each night
  (a user the policy held out is not contacted by the references either that night). The cooldown
  after a conversion does not apply (the loops draw no conversions); a rest is a night without a send:

  - `random`: uniform over the offers allowed tonight (consented channel, under the cap), every night;
  - `rule`: `recsys.model.baselines.RuleHeuristicPolicy` on the cohort's night-1 features, every night;
  - `fixed_cadence`: one offer for everybody, sent every k nights (nights 1, 1 + k, ...), k = 1..7;
    the offer and k are chosen under the truth: the pair with the highest mean value over the
    valuation range (`ValueRange`);
  - `oracle`: cadence-aware oracle: each user's own best (offer, k) pair under the truth, k = 1..7,
    or never contacting them (value 0) when no pair is worth more than nothing over the range. The
    fatigue an offer causes lowers the value of the user's next 7 nights in the truth, so the pair
    that is best over the range already nets tonight's value against fatigue's future cost: sending
    every night pays only for users whose value survives their own fatigue.

  `random` and `rule` draw their unsubscribes (an opened offer unsubscribes with the truth's
  probability, with the same uniform draw per user and night in both loops). `fixed_cadence` and
  `oracle` are exact expectations: a fixed offer on a fixed schedule is sent, as long as the user
  has not unsubscribed, on every scheduled night the cap and holdout allow, so its expected value
  on a night is P(still subscribed) x the truth's value at the fatigue of the sends so far. That
  makes `oracle >= fixed_cadence` user by user, and the choice of k free of luck.

**Over a range of nights** (`ValueRange`, nights 8-30 by default: after the week when the past
campaigns' fatigue wears off) the value per user is the user's mean over those nights; the
intervals are 95% normal intervals over the cohort's users and every difference is paired by user.
The bar's statistic is the lower bound of `policy - 1.15 x fixed_cadence`.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.benchmark.simulate.values import Interval

REFERENCES = ("random", "rule", "fixed_cadence", "oracle")
COHORT_ROWS = ("policy", *REFERENCES)
"""The cohort's values, in the order of the table."""
CADENCES = tuple(range(1, 8))
BAR_FACTOR = 1.15
"""The bar: the policy must beat this multiple of the best fixed offer at its best cadence."""
WINDOW = 7
"""Nights of offers that the truth's fatigue counts (`offers_last_7d`)."""


@dataclass
class Cohort:
    """The users active on night 1 and where every reference loop starts from."""

    user_ids: np.ndarray
    """Sorted user ids."""
    idx: np.ndarray
    """Row of each user in the truth."""
    channel_ok: np.ndarray
    """(n, 3) consent with an address per channel (email, sms, push) on night 1."""
    prior: np.ndarray
    """(n, 7) offers each user got on the 7 nights before night 1 (column 0: 7 nights before)."""
    obs: np.ndarray
    """(n, features) normalised night-1 features, for the rule heuristic."""
    cap: int
    """Offers per user in 7 nights."""

    def __len__(self) -> int:
        return len(self.user_ids)

    def positions(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which of `user_ids` are in the cohort, their positions in it)."""
        ids = np.asarray(user_ids, dtype=np.int64)
        if len(self.user_ids) == 0:
            return np.zeros(len(ids), bool), np.zeros(0, np.int64)
        pos = np.minimum(np.searchsorted(self.user_ids, ids), len(self.user_ids) - 1)
        inside = self.user_ids[pos] == ids
        return inside, pos[inside]

    def fatigue_before(self, t: int) -> np.ndarray:
        """Offers of the nights before night 1 that still count on night t (0-based), per user."""
        return self.prior[:, t:].sum(axis=1).astype(np.float64) if t < WINDOW else np.zeros(len(self))


@dataclass
class CohortLedger:
    """The policy's value per cohort user and night, and who was held out each night."""

    cohort: Cohort
    nights: int
    policy: np.ndarray = field(init=False)
    sent: np.ndarray = field(init=False)
    """Offers sent per user and night (a rest sends none)."""
    held: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.cohort)
        self.policy = np.zeros((self.nights, n))
        self.sent = np.zeros((self.nights, n))
        self.held = np.zeros((self.nights, n), bool)

    def record(self, t: int, sent_users: np.ndarray, sent_values: np.ndarray, held_users: np.ndarray) -> None:
        """Night t (0-based): the true values of the offers sent (0 for everyone not sent one)."""
        inside, pos = self.cohort.positions(sent_users)
        np.add.at(self.policy[t], pos, np.asarray(sent_values, dtype=np.float64)[inside])
        np.add.at(self.sent[t], pos, 1.0)
        inside, pos = self.cohort.positions(held_users)
        self.held[t, pos] = True


@dataclass(frozen=True)
class ValueRange:
    """Nights first..last (1-based, inclusive) of the valuation over a range."""

    first: int = 8
    last: int = 30

    def clip(self, nights: int) -> ValueRange:
        """Within a run of `nights` nights; a run shorter than `first` is valued over all its nights."""
        last = min(self.last, nights)
        return ValueRange(self.first if self.first <= last else 1, last)

    def slice(self) -> slice:
        return slice(self.first - 1, self.last)

    def label(self) -> str:
        return f"nights {self.first}-{self.last}"


@dataclass
class CohortValues:
    """Every cohort user's value on every night (nights x users) under the policy and the references."""

    values: dict[str, np.ndarray]
    fixed_action: int
    fixed_cadence: int
    oracle_cadence: np.ndarray
    """Per user: the oracle's k (0: never contacted)."""
    sends: dict[str, np.ndarray]
    """Per loop: offers sent (expected, for the exact loops) per user and night."""

    def night(self, t: int) -> dict[str, Interval]:
        return {name: Interval.of(v[t]) for name, v in self.values.items()}

    def summary(self, value_range: ValueRange) -> dict[str, Any]:
        """Mean value per user-night over the range with paired intervals, and the bar's statistic."""
        sl = value_range.slice()
        per_user = {name: v[sl].mean(axis=0) for name, v in self.values.items()}
        policy = per_user["policy"]
        out: dict[str, Any] = {
            "range": [value_range.first, value_range.last],
            "users": len(policy),
            "values": {name: _interval(Interval.of(x)) for name, x in per_user.items()},
            "policy_minus": {
                name: _interval(Interval.of(policy - x)) for name, x in per_user.items() if name != "policy"
            },
            "offers_per_user_week": {
                name: float(s[sl].sum(axis=0).mean()) * 7 / s[sl].shape[0] for name, s in self.sends.items()
            },
        }
        bar = Interval.of(policy - BAR_FACTOR * per_user["fixed_cadence"])
        out["bar"] = {"factor": BAR_FACTOR, **_interval(bar), "passes": bool(bar.lower > 0)}
        return out


def _interval(x: Interval) -> dict[str, float | int]:
    return {"mean": x.mean, "lower": x.lower, "upper": x.upper, "n": x.n}


def _channels(truth: Any) -> np.ndarray:
    return np.asarray(truth.action_channel, dtype=np.int64)


def _unsubscribe_probability(resp: Any) -> np.ndarray:
    """P(unsubscribe) of a sent offer, as the simulated users draw it: opened, then not clicked."""
    return resp.p_open * np.minimum(resp.p_unsubscribe, 1.0 - resp.p_click)


def cadence_loop(
    truth: Any,
    cohort: Cohort,
    dates: list[dt.date],
    held: np.ndarray,
    actions: np.ndarray,
    cadence: np.ndarray,
    *,
    total_over: slice | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact expected values of fixed offers on fixed schedules: `actions` (n or 1, m) sent every
    `cadence` (broadcast with actions; 0: never) nights from night 1, while subscribed, under the cap
    and outside the night's holdout. Returns values and expected sends, both (nights, n, m); with
    `total_over`, the values summed over those nights (n, m) and the sends likewise."""
    n = len(cohort)
    actions = np.asarray(actions, dtype=np.int64)
    cadence = np.asarray(cadence, dtype=np.int64)
    m = np.broadcast_shapes(actions.shape, cadence.shape, (n, 1))[1]
    idx = cohort.idx[:, None]
    alive = np.broadcast_to(cohort.channel_ok[np.arange(n)[:, None], _channels(truth)[actions]], (n, m)).astype(float)
    recent: deque[np.ndarray] = deque(maxlen=WINDOW)
    kept = range(len(dates))[total_over] if total_over is not None else None
    shape = (n, m) if kept is not None else (len(dates), n, m)
    values, sends = np.zeros(shape), np.zeros(shape)
    penalty = truth.params.unsubscribe_penalty
    for t, night in enumerate(dates):
        k = cohort.fatigue_before(t)[:, None] + (sum(recent) if recent else 0.0)
        due = (cadence > 0) & (t % np.maximum(cadence, 1) == 0)
        send = due & ~held[t][:, None] & (k < cohort.cap) & (alive > 0)
        send = np.broadcast_to(send, (n, m))
        resp = truth.response(idx, actions, night=night, offers_last_7d=np.broadcast_to(k, (n, m)))
        value, sent = np.where(send, alive * resp.expected_value(penalty), 0.0), np.where(send, alive, 0.0)
        if kept is None:
            values[t], sends[t] = value, sent
        elif t in kept:
            values += value
            sends += sent
        alive = np.where(send, alive * (1.0 - _unsubscribe_probability(resp)), alive)
        recent.append(send.astype(np.float64))  # conditional on still subscribed, the offer went out
    return values, sends


def _best_cadences(
    truth: Any, cohort: Cohort, dates: list[dt.date], held: np.ndarray, value_range: ValueRange
) -> np.ndarray:
    """Sum over the range of each (k, user, action) loop's values: (len(CADENCES), n, actions)."""
    actions = np.arange(truth.n_actions)[None, :]
    sl = value_range.slice()
    return np.stack(
        [cadence_loop(truth, cohort, dates, held, actions, np.array([[k]]), total_over=sl)[0] for k in CADENCES]
    )


def sampled_loop(
    truth: Any,
    cohort: Cohort,
    dates: list[dt.date],
    held: np.ndarray,
    choose: Any,
    draws: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """A policy choosing tonight's offer (`choose(t, mask) -> action per user, -1: none`) among the
    allowed ones, every night, with unsubscribes drawn from `draws` (nights, n) uniforms. Returns
    values and sends, both (nights, n)."""
    n = len(cohort)
    ch = _channels(truth)
    consent = cohort.channel_ok.copy()
    recent: deque[np.ndarray] = deque(maxlen=WINDOW)
    values = np.zeros((len(dates), n))
    sends = np.zeros((len(dates), n))
    penalty = truth.params.unsubscribe_penalty
    rows = np.arange(n)
    for t, night in enumerate(dates):
        k = cohort.fatigue_before(t) + (sum(recent) if recent else 0.0)
        can = ~held[t] & (k < cohort.cap)
        mask = consent[:, ch] & can[:, None]
        action = np.asarray(choose(t, mask), dtype=np.int64)
        send = action >= 0
        a = np.where(send, action, 0)
        resp = truth.response(cohort.idx, a, night=night, offers_last_7d=k)
        values[t] = np.where(send, resp.expected_value(penalty), 0.0)
        sends[t] = send
        gone = send & (draws[t] < _unsubscribe_probability(resp))
        consent[rows[gone], ch[a[gone]]] = False
        recent.append(send.astype(np.float64))
    return values, sends


def reference_values(
    truth: Any,
    ledger: CohortLedger,
    dates: list[dt.date],
    value_range: ValueRange,
    seed: int,
) -> CohortValues:
    """Run every reference loop on the ledger's cohort; the values of all, policy included."""
    from recsys.model.baselines import RuleHeuristicPolicy

    cohort, held = ledger.cohort, ledger.held
    n = len(cohort)
    rng_draws, rng_random = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, 0xC0]).spawn(2))
    draws = rng_draws.random((len(dates), n))

    def uniform(t: int, mask: np.ndarray) -> np.ndarray:
        keys = np.where(mask, rng_random.random(mask.shape), -1.0)
        return np.where(mask.any(axis=1), keys.argmax(axis=1), -1)

    rule = RuleHeuristicPolicy(truth.catalog)

    def heuristic(t: int, mask: np.ndarray) -> np.ndarray:
        out = np.full(n, -1, dtype=np.int64)
        some = mask.any(axis=1)
        if some.any():
            out[some] = rule.probabilities(cohort.obs[some], mask[some]).argmax(axis=1)
        return out

    random_v, random_s = sampled_loop(truth, cohort, dates, held, uniform, draws)
    rule_v, rule_s = sampled_loop(truth, cohort, dates, held, heuristic, draws)

    totals = _best_cadences(truth, cohort, dates, held, value_range)  # (K, n, A)
    kf, af = np.unravel_index(int(totals.mean(axis=1).argmax()), (len(CADENCES), truth.n_actions))
    fixed_cadence = CADENCES[kf]
    fixed_v, fixed_s = cadence_loop(truth, cohort, dates, held, np.array([[af]]), np.array([[fixed_cadence]]))

    flat = totals.transpose(1, 0, 2).reshape(n, -1)  # per user: (k, action) pairs
    best = flat.argmax(axis=1)
    worth = flat[np.arange(n), best] > 0
    user_k = np.where(worth, np.asarray(CADENCES)[best // truth.n_actions], 0)
    user_a = best % truth.n_actions
    oracle_v, oracle_s = cadence_loop(truth, cohort, dates, held, user_a[:, None], user_k[:, None])

    values = {
        "policy": ledger.policy,
        "random": random_v,
        "rule": rule_v,
        "fixed_cadence": fixed_v[:, :, 0],
        "oracle": oracle_v[:, :, 0],
    }
    sends = {
        "policy": ledger.sent,
        "random": random_s,
        "rule": rule_s,
        "fixed_cadence": fixed_s[:, :, 0],
        "oracle": oracle_s[:, :, 0],
    }
    return CohortValues(values, int(af), fixed_cadence, user_k, sends)


def format_cohort_table(values: CohortValues, dates: list[dt.date], summary: dict[str, Any], fixed: str) -> str:
    """Per night and over the range: value per cohort user-night under the policy and the references."""
    lines = [
        f"Fixed cohort: {summary['users']:,} users active on night 1; value per user-night, no offer = 0",
        f"{'night':>5} {'date':10} {'policy':>23} {'random':>8} {'rule':>8} {'fixed@k':>23} {'oracle':>8}",
    ]
    for t, day in enumerate(dates):
        v = values.night(t)

        def ci(x: Interval) -> str:
            return f"{x.mean:7.4f} [{x.lower:6.4f},{x.upper:6.4f}]"

        lines.append(
            f"{t + 1:>5} {day.isoformat():10} {ci(v['policy']):>23} {v['random'].mean:8.4f} {v['rule'].mean:8.4f} "
            f"{ci(v['fixed_cadence']):>23} {v['oracle'].mean:8.4f}"
        )
    first, last = summary["range"]
    lines.append(f"best fixed offer at its best cadence: {fixed}, every {values.fixed_cadence} night(s)")
    lines.append(f"nights {first}-{last}, mean value per user-night [95% CI] and offers per user per week:")
    for name in COHORT_ROWS:
        x = summary["values"][name]
        rate = summary["offers_per_user_week"][name]
        lines.append(f"  {name:14} {x['mean']:.4f} [{x['lower']:.4f}, {x['upper']:.4f}]  {rate:.2f} offers/week")
    for name, d in summary["policy_minus"].items():
        lines.append(f"  policy - {name:14} {d['mean']:+.4f} [{d['lower']:+.4f}, {d['upper']:+.4f}]")
    b = summary["bar"]
    lines.append(
        f"bar: policy - {b['factor']} x fixed@k = {b['mean']:+.4f}, paired lower 95% bound {b['lower']:+.4f} "
        f"({'above 0: passes' if b['passes'] else 'not above 0'})"
    )
    return "\n".join(lines)
