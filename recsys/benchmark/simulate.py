"""`recsys simulate --nights N`: the nightly run against simulated users, night after night.

A fresh generated shop (`generate-data`: users, `history_days` of behaviour and past campaigns up
to the start date) is loaded into a database of its own; then, for each campaign date D:

1. **The nightly run** for D: the `recsys_nightly` DAG through `dag.test()` (or, with
   `--in-process`, the same stages called directly in the same order): extract the inbox with
   D 00:00 UTC as reference time, features as of D, train (`mode` auto: fine-tune the champion or
   retrain), gate, score every active user (offers, holdout, exploration) and publish.
2. **A simulated sender** sends every published offer of the night. It marks them `sent` in SQL at
   their `scheduled_at` instead of calling `claim_offers`, because `claim_offers` compares with the
   wall clock (`now()`) while the simulated nights lie in the past: their offers would be expired.
3. **Simulated users** respond to the offers actually sent, drawn from the generator's hidden
   truth for that user, action and night (fatigue from their offers of the 7 nights before):
   delivered, opened, clicked, converted (with the order's revenue), unsubscribed. The outcomes go
   in through `recsys.record_offer_event` (an unsubscribe revokes the channel's consent); clicks
   become sessions and conversions purchases, written with every user's organic behaviour of the
   day (`recsys.benchmark.synth.generate`'s session model, so holdout and untreated users shop too) as an
   `events_*.csv` file into the inbox, which the next night's extract loads. Events later than the
   next night's reference time wait for a later night's file.
4. **Valuation under the truth**: the expected value (the truth's reward, as in `recsys.evaluation.ope`)
   of the offers sent, per treated user, next to what the same users would be worth under uniform
   random over their allowed actions, the best single fixed offer of that night (chosen with the
   truth: a strong reference) and the oracle (each user's best allowed offer). The control group
   (holdout) gets no offer, so its incremental value is 0 by definition; the measured purchase
   revenue per user of the day, treated against holdout, is reported beside it. Intervals are 95%
   normal intervals over users, mean +- 1.96 sd / sqrt(n); `policy - fixed` is the paired difference.

The table is printed, saved as `values.csv` and `values.json`, and plotted to `values.png` in the
output folder. The truth is read here (to play the users and to measure) and never reaches the
database, the features or anything the policy learns from: the policy sees only the behaviour and
the offer outcomes that the simulated users produce.

The simulation runs in a database of its own, `recsys_simulate` by default, created on the server of
`RECSYS_DATABASE_URL` (or the embedded server) and replaced at each start: the configured database
itself is never touched. Files (generated shop, inbox, Airflow's local metadata, results) live in
`--out`.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from psycopg2.extensions import parse_dsn

from recsys.config.settings import PROJECT_ROOT, Settings, load_settings, package_dir
from recsys.db import Connection, airflow_connection, connect, create_database, database_url, fetch_all
from recsys.db.sqlfiles import load_sql
from recsys.errors import RecsysError

log = logging.getLogger(__name__)

# The simulator plays the users, so it is the one module besides evaluation that reads the
# generator's truth; recsys.benchmark.synth is imported inside the functions that need it, never at import.
SIM_DATABASE = "recsys_simulate"
SENDER_WORKER = "simulator"
Z95 = 1.96
DAY = 86_400
HOUR = 3_600

VALUE_ROWS = ("policy", "best_fixed", "random", "oracle", "control")
"""The per-night values, in the order of the table and the plot."""


@dataclass(frozen=True)
class SimulateConfig:
    """What to simulate. Defaults: one seed of the showcase in a few minutes on 2 cores."""

    nights: int = 7
    """Consecutive campaign dates to run."""
    users: int = 5_000
    """Users of the generated shop."""
    seed: int = 1
    """Seed of the shop, the simulated users and training."""
    start: dt.date | None = None
    """First campaign date (default: `nights` days before today, so every simulated night is past)."""
    out: Path = PROJECT_ROOT / "data" / "simulate"
    """Folder for the generated shop, the inbox, Airflow's metadata and the results."""
    timesteps: int = 200_000
    """PPO steps per night (a retrain, or a fine-tune of the champion): the nightly DAG's default, so
    the showcase measures the policy the shipped nightly run would learn. At 60,000 PPO reached only
    about 80% of its own response model's greedy value and stayed below the best fixed offer."""
    history_days: int = 60
    """Days of generated behaviour and past campaigns before the first night."""
    in_process: bool = False
    """Call the nightly stages directly instead of running the DAG through dag.test()."""
    shards: int = 1
    """Scoring shards per night."""
    database: str = SIM_DATABASE
    """Name of the simulation's own database (created, or replaced, on the configured server)."""
    frequency_cap: int | None = 7
    """Offers per user in 7 days for the simulated campaigns (None: the configuration's rule, 3 by
    default). 7 lets every active user get an offer every night, so each night is a full campaign to
    measure; with the shipped 3 in 7 days most users sit out nights 4 to 7."""

    def first_night(self) -> dt.date:
        return self.start or dt.datetime.now(dt.UTC).date() - dt.timedelta(days=self.nights)


# --- values under the truth ----------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A mean over users with its 95% normal interval."""

    mean: float
    lower: float
    upper: float
    n: int

    @classmethod
    def of(cls, per_user: np.ndarray) -> Interval:
        x = np.asarray(per_user, dtype=np.float64)
        n = len(x)
        if n == 0:
            return cls(math.nan, math.nan, math.nan, 0)
        mean = float(x.mean())
        half = Z95 * float(x.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
        return cls(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class NightValues:
    """One night of the table: true values per treated user, with intervals, and what happened."""

    night: int
    campaign_date: dt.date
    treated: int
    holdout: int
    values: dict[str, Interval]
    """policy, best_fixed, random, oracle, control: mean value per user and night under the truth."""
    policy_minus_fixed: Interval
    fixed_action: str
    outcomes: dict[str, int] = field(default_factory=dict)
    revenue_treated: Interval | None = None
    revenue_holdout: Interval | None = None
    model_version: str | None = None
    training_mode: str | None = None
    seconds: float = 0.0

    def flat(self) -> dict[str, Any]:
        """One flat record (CSV row / JSON object)."""
        row: dict[str, Any] = {
            "night": self.night,
            "campaign_date": self.campaign_date.isoformat(),
            "treated_users": self.treated,
            "holdout_users": self.holdout,
        }
        for name in VALUE_ROWS:
            v = self.values[name]
            row.update({name: v.mean, f"{name}_lower": v.lower, f"{name}_upper": v.upper})
        d = self.policy_minus_fixed
        row.update({"policy_minus_fixed": d.mean, "pmf_lower": d.lower, "pmf_upper": d.upper})
        row["fixed_action"] = self.fixed_action
        for key in ("revenue_treated", "revenue_holdout"):
            r: Interval | None = getattr(self, key)
            row[key] = None if r is None else r.mean
        row.update(self.outcomes)
        row.update({"model_version": self.model_version, "training_mode": self.training_mode})
        row["seconds"] = round(self.seconds, 1)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def value_users(
    truth: Any,
    catalog: Any,
    night: dt.date,
    user_ids: np.ndarray,
    sent_actions: np.ndarray,
    channel_ok: np.ndarray,
    offers_last_7d: np.ndarray,
) -> tuple[dict[str, np.ndarray], int]:
    """Per-user true values of the offers sent and of the references, on the same users and night.

    `channel_ok` (n, 3: email, sms, push) is what scoring saw: consent and an address. Returns the
    per-user arrays (policy, best_fixed, random, oracle) and the fixed action's id.
    """
    n = len(user_ids)
    channel_index = {"email": 0, "sms": 1, "push": 2}
    cols = np.array([channel_index[a.channel] for a in catalog.actions])
    mask = np.asarray(channel_ok, dtype=bool)[:, cols] if n else np.zeros((0, catalog.n_actions), bool)
    values = truth.value_matrix(user_ids, night=night, offers_last_7d=offers_last_7d, respect_consent=True)
    allowed = np.where(mask, values, 0.0)
    n_allowed = mask.sum(axis=1)
    random_u = np.divide(allowed.sum(axis=1), n_allowed, out=np.zeros(n), where=n_allowed > 0)
    oracle_u = np.where(n_allowed > 0, np.where(mask, values, -np.inf).max(axis=1), 0.0) if n else np.zeros(0)
    fixed = int(allowed.mean(axis=0).argmax()) if n else 0
    policy_u = values[np.arange(n), np.asarray(sent_actions, dtype=np.int64)] if n else np.zeros(0)
    return {"policy": policy_u, "best_fixed": allowed[:, fixed], "random": random_u, "oracle": oracle_u}, fixed


# --- the simulated users ---------------------------------------------------------------------------


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
        resp = truth.response(idx, action, night=night, offers_last_7d=offers_last_7d)
        # An offer on a channel the user no longer consents to would not reach them.
        reached = self.consent[idx, truth.action_channel[action]] if m else np.zeros(0, bool)
        opened = reached & (rng.random(m) < resp.p_open)
        u = rng.random(m)
        clicked = opened & (u < resp.p_click)
        unsubscribed = opened & (u >= 1.0 - resp.p_unsubscribe) & ~clicked
        converted = clicked & (rng.random(m) < resp.p_convert)
        sent = np.asarray(offers.sent_at, dtype=np.int64)
        # Responses come within the generator's horizon (24 h) and, like the generator's, before the
        # end of the day (the next night's reference time), so the next night learns final outcomes
        # and sees every resulting event; an offer sent after midnight (moved by quiet hours) keeps
        # the full horizon and its events wait for a later night's file.
        next_midnight = _epoch(night) + DAY
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


# --- the simulated sender and the database side --------------------------------------------------


def _sql(name: str) -> str:
    """sql/simulate/<name>.sql, shipped with the package (the simulation plays the sender's side)."""
    return load_sql(package_dir("sql"), f"simulate/{name}")


def send_all(conn: Connection, night: dt.date, *, publish_hour_utc: float = 1.0) -> SentOffers:
    """Mark every scheduled offer of the night's published runs sent, at its send time on the
    simulated clock.

    Scoring and publishing stamp `scheduled_at` with the real publish moment (the wall clock), which
    for a simulated night in the past is days later. The simulated sender recomputes each offer's
    send time with the same SQL (`recsys.offer_schedule`: release, delay, quiet hours) as if the run
    had been published at `publish_hour_utc` on the night, and sends it then.
    """
    from recsys.config.catalog import load_catalog
    from recsys.config.rules import load_rules

    rules = load_rules()
    catalog = load_catalog()
    channels = list(catalog.channels)
    quiet = [rules.quiet_hours.get(ch, (None, None)) for ch in channels]
    publish_at = _midnight(night) + dt.timedelta(hours=publish_hour_utc)
    rows = fetch_all(
        conn,
        _sql("send_all"),
        {
            "night": night,
            "worker": SENDER_WORKER,
            "timings": list(catalog.timings),
            "delays": [int(catalog.timing_delay_minutes[t]) for t in catalog.timings],
            "channels": channels,
            "quiet_start": [q[0] for q in quiet],
            "quiet_end": [q[1] for q in quiet],
            "send_time": rules.send_time,
            "publish_at": publish_at,
        },
    )
    rows.sort(key=lambda r: r["offer_id"])
    return SentOffers(
        offer_id=np.array([r["offer_id"] for r in rows], dtype=np.int64),
        user_id=np.array([r["user_id"] for r in rows], dtype=np.int64),
        action_id=np.array([r["action_id"] for r in rows], dtype=np.int64),
        sent_at=np.array([r["sent_at"] for r in rows], dtype=np.int64),
    )


def offers_last_7d(conn: Connection, night: dt.date, user_ids: np.ndarray) -> np.ndarray:
    """Offers each user got in the 7 nights before `night`: past campaigns and the system's own."""
    rows = fetch_all(
        conn,
        _sql("offers_last_7d"),
        {"lo": night - dt.timedelta(days=7), "night": night, "ids": [int(u) for u in user_ids]},
    )
    counts = {int(r["user_id"]): int(r["n"]) for r in rows}
    return np.array([counts.get(int(u), 0) for u in user_ids], dtype=np.float64)


def channel_ok(conn: Connection, user_ids: np.ndarray) -> np.ndarray:
    """(n, 3) consent with an address per channel (email, sms, push), as scoring reads it."""
    rows = fetch_all(
        conn,
        _sql("channel_ok"),
        {"ids": [int(u) for u in user_ids]},
    )
    ok = {int(r["user_id"]): (r["email"], r["sms"], r["push"]) for r in rows}
    return np.array([ok.get(int(u), (False, False, False)) for u in user_ids], dtype=bool).reshape(-1, 3)


def holdout_users(conn: Connection, night: dt.date) -> np.ndarray:
    rows = fetch_all(conn, _sql("holdout_users"), {"night": night})
    return np.array(sorted(int(r["user_id"]) for r in rows), dtype=np.int64)


def record_responses(conn: Connection, responses: Responses) -> int:
    """Write the outcomes through the sender protocol's `record_offer_event`, in one statement.

    The protocol refuses events dated in the future (beyond a small clock skew), as it would from a
    real provider; outcomes of the last simulated night that lie after the wall clock's now (the
    default start puts that night yesterday) are not recorded: no later night would read them, and
    the night's value is measured under the truth, not from these events."""
    ids, names, times, revenue = responses.offer_events()
    if not ids:
        return 0
    with conn.cursor() as cur:
        cur.execute(
            _sql("record_responses"),
            {"ids": ids, "events": names, "times": times, "revenue": revenue},
        )
        return int(cur.fetchone()[0])


def night_model(conn: Connection, night: dt.date) -> tuple[str | None, str | None]:
    """The model that chose the night's offers, and how it was trained."""
    rows = fetch_all(conn, _sql("night_model"), {"night": night})
    return (rows[0]["model_version"], rows[0]["training_mode"]) if rows else (None, None)


# --- the nightly run ---------------------------------------------------------------------------------


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def run_night_in_process(settings: Settings, night: dt.date, *, timesteps: int, seed: int, shards: int) -> None:
    """The nightly DAG's tasks for campaign date `night`, in its order, called in this process."""
    from recsys.orchestration import pipeline

    run_id = f"simulate__{night.isoformat()}"
    tasks: dict[str, Any] = {
        "migrate": pipeline.migrate(settings),
        "extract": pipeline.extract(settings, night),
        "ingest_feedback": pipeline.ingest_feedback(settings, night),
        "features": pipeline.build_features(settings, night),
        "train": pipeline.train(settings, night, mode="auto", total_timesteps=timesteps, seed=seed),
        "evaluate": pipeline.evaluate(settings, night),
    }
    tasks["score"] = [
        pipeline.score_shard(settings, night, run_id=run_id, shard=k, shards=shards)
        for k in pipeline.shard_list(shards)
    ]
    tasks["publish"] = pipeline.publish(settings, run_id)
    pipeline.report(settings, run_id, night, tasks=tasks)


class DagRunner:
    """Runs `dags/recsys_nightly.py` once per night through `dag.test()`, in a child process.

    The child (`python -m recsys.orchestration.airflow_local`) gets its own `AIRFLOW_HOME` (SQLite metadata under
    the output folder, migrated on the first night) and the simulation database as the `recsys_db`
    connection, so a user's own Airflow is never touched; a fresh process per night keeps Airflow's
    global state out of the simulator.
    """

    def __init__(self, settings: Settings, url: str, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "RECSYS_DATABASE_URL": url,
            "RECSYS_DATA_DIR": str(settings.data_dir),
            "RECSYS_INBOX": str(settings.inbox),
            "RECSYS_NIGHTLY_RETRIES": "0",
            "RECSYS_INBOX_SETTLE_SECONDS": "0",  # the simulator writes the inbox files whole
            "OMP_NUM_THREADS": "1",
        }
        self.env.pop("AIRFLOW_HOME", None)
        # The DAG reads the `recsys_db` connection first: point it at the simulation database (a
        # user's own connection must never be used), unix-socket servers included.
        self.env["AIRFLOW_CONN_RECSYS_DB"] = airflow_connection(url)

    def run(self, night: dt.date, *, timesteps: int, seed: int, shards: int) -> dict[str, Any]:
        """One DAG run for the night; its task instances (state, seconds). `seed`: the DAG's own."""
        conf = {"campaign_date": night.isoformat(), "mode": "auto", "total_timesteps": timesteps, "shards": shards}
        cmd = [
            sys.executable,
            "-m",
            "recsys.orchestration.airflow_local",
            "--home",
            str(self.home),
            "--date",
            f"{night.isoformat()}T02:00:00+00:00",
            "--conf",
            json.dumps(conf),
            "recsys_nightly",
        ]
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, cwd=PROJECT_ROOT)
        log_path = self.home / "simulate.log"
        with open(log_path, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{out.stdout}\n{out.stderr}\n")
        result = next((line[7:] for line in out.stdout.splitlines() if line.startswith("RESULT ")), None)
        if out.returncode != 0 or result is None:
            tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RecsysError(
                f"the recsys_nightly DAG run for {night} failed (exit {out.returncode}): {tail[0]} (log: {log_path})"
            )
        return json.loads(result)


# --- the whole simulation ----------------------------------------------------------------------------


@dataclass
class SimulationResult:
    config: SimulateConfig
    nights: list[NightValues]
    paths: dict[str, Path]

    def table(self) -> str:
        return format_table(self.nights)


def prepare_database(settings: Settings, name: str) -> str:
    """Create (or replace) the simulation's own database on the configured server; its URL."""
    server = database_url(settings)
    params = parse_dsn(server)
    if params.get("dbname") == name:
        raise RecsysError(
            f"the configured database is {name!r}, the simulation's own: give the simulation another database name"
        )
    return create_database(server, name, replace=True)


def campaign_config(out: Path, frequency_cap: int | None) -> Path | None:
    """A copy of the configuration (RECSYS_CONFIG or the packaged file) with the simulation's
    frequency cap, in `out`; None when the configuration's own rule applies."""
    from recsys.config.catalog import DEFAULT_CONFIG

    if frequency_cap is None:
        return None
    source = Path(os.environ.get("RECSYS_CONFIG") or DEFAULT_CONFIG)
    text = source.read_text()
    section = re.search(r"^\[campaign\.frequency_cap\]\n(?:(?!^\[).*\n?)*", text, flags=re.M)
    if section is None or not re.search(r"^total\s*=", section.group(0), flags=re.M):
        raise RecsysError(f"{source}: no [campaign.frequency_cap] total to set the simulation's frequency cap in")
    body = re.sub(r"^total\s*=.*$", f"total = {int(frequency_cap)}", section.group(0), count=1, flags=re.M)
    target = out / "config.toml"
    target.write_text(text[: section.start()] + body + text[section.end() :])
    return target


def _check(config: SimulateConfig) -> None:
    if not re.fullmatch(r"recsys_sim[a-z0-9_]{0,50}", config.database):
        raise RecsysError(
            f"--database {config.database!r}: the simulation drops and recreates its database, so its name must "
            "start with recsys_sim (lower-case letters, digits, _)"
        )
    if config.frequency_cap is not None and config.frequency_cap < 1:
        raise RecsysError(f"--frequency-cap must be a whole number >= 1, got {config.frequency_cap!r}")
    for name in ("nights", "users", "timesteps", "history_days", "shards"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RecsysError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")


def simulate(config: SimulateConfig, settings: Settings | None = None, *, echo: bool = True) -> SimulationResult:
    """Generate a shop, then run `config.nights` nights with simulated sender and users."""
    _check(config)
    settings = settings or load_settings()
    out = Path(config.out)
    first = config.first_night()
    dates = [first + dt.timedelta(days=i) for i in range(config.nights)]
    for sub in ("shop", "inbox", "data", "airflow"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        if echo:
            print(text, flush=True)

    if echo:  # the stages' own log lines would bury the table
        logging.getLogger("recsys").setLevel(logging.WARNING)

    config_path = campaign_config(out, config.frequency_cap)
    previous = os.environ.get("RECSYS_CONFIG")
    if config_path is not None:
        os.environ["RECSYS_CONFIG"] = str(config_path)
    try:
        return _simulate(config, settings, out, first, dates, say)
    finally:
        if config_path is not None:
            if previous is None:
                os.environ.pop("RECSYS_CONFIG", None)
            else:
                os.environ["RECSYS_CONFIG"] = previous


def _simulate(
    config: SimulateConfig, settings: Settings, out: Path, first: dt.date, dates: list[dt.date], say: Any
) -> SimulationResult:
    from recsys.benchmark.synth.generate import generate_data, truth_path_for
    from recsys.benchmark.synth.truth import GroundTruth
    from recsys.config.catalog import load_catalog

    shop = out / "shop"
    summary = generate_data(users=config.users, days=config.history_days, seed=config.seed, out=shop, end_date=first)
    say(summary.format_report())
    truth = GroundTruth.load(truth_path_for(shop))
    catalog = load_catalog()
    url = prepare_database(settings, config.database)
    sim_settings = dataclasses.replace(
        settings, database_url=url, data_dir=out / "data", inbox=out / "inbox", inbox_settle_seconds=0
    )
    sim_settings.inbox.mkdir(parents=True, exist_ok=True)
    for f in sorted(shop.glob("*.csv")):
        shutil.copy(f, sim_settings.inbox / f.name)
    say(f"Simulating {config.nights} nights from {first} in the database {config.database!r}")

    runner = None if config.in_process else DagRunner(sim_settings, url, out / "airflow")
    users = SimulatedUsers(truth, config.seed)
    results: list[NightValues] = []
    for i, night in enumerate(dates, start=1):
        started = time.perf_counter()
        if runner is None:
            run_night_in_process(
                sim_settings, night, timesteps=config.timesteps, seed=config.seed, shards=config.shards
            )
        else:
            runner.run(night, timesteps=config.timesteps, seed=config.seed, shards=config.shards)
        with connect(url) as conn:
            sent = send_all(conn, night, publish_hour_utc=truth.params.publish_hour_utc)
            held = holdout_users(conn, night)
            k = offers_last_7d(conn, night, sent.user_id)
            ok = channel_ok(conn, sent.user_id)
            per_user, fixed = value_users(truth, catalog, night, sent.user_id, sent.action_id, ok, k)
            responses = users.respond(night, sent, k)
            record_responses(conn, responses)
            model_version, mode = night_model(conn, night)
        buys = users.live_day(night, responses)
        written = users.write_events(sim_settings.inbox / f"events_sim_{night.isoformat()}.csv", _epoch(night) + DAY)
        revenue = _revenue_per_user(buys, sent.user_id, held)
        action = catalog.actions[fixed]
        row = NightValues(
            night=i,
            campaign_date=night,
            treated=len(sent),
            holdout=len(held),
            values={
                **{k2: Interval.of(v) for k2, v in per_user.items()},
                "control": Interval(0.0, 0.0, 0.0, len(held)),
            },
            policy_minus_fixed=Interval.of(per_user["policy"] - per_user["best_fixed"]),
            fixed_action=action.describe(catalog.value_units[action.offer_type]),
            outcomes={**responses.counts(), "events_written": written},
            revenue_treated=revenue[0],
            revenue_holdout=revenue[1],
            model_version=model_version,
            training_mode=mode,
            seconds=time.perf_counter() - started,
        )
        results.append(row)
        say(format_table([row], header=i == 1))
    paths = save_results(results, out, config)
    say(f"Saved {', '.join(str(p) for p in paths.values())}")
    return SimulationResult(config, results, paths)


def _epoch(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * DAY


def _revenue_per_user(buys: dict[str, np.ndarray], treated: np.ndarray, held: np.ndarray) -> tuple[Interval, Interval]:
    """Measured purchase revenue of the day per treated and per holdout user."""
    users = np.concatenate([treated, held])
    pos = {int(u): i for i, u in enumerate(users.tolist())}
    total = np.zeros(len(users))
    keep = np.array([int(u) in pos for u in buys["user_id"].tolist()], dtype=bool)
    where = np.array([pos[int(u)] for u in buys["user_id"][keep].tolist()], dtype=np.int64)
    np.add.at(total, where, buys["amount_cents"][keep] / 100.0)
    return Interval.of(total[: len(treated)]), Interval.of(total[len(treated) :])


# --- output --------------------------------------------------------------------------------------------


def format_table(rows: list[NightValues], *, header: bool = True) -> str:
    """The per-night table: true value per treated user and night, 95% intervals."""
    lines = []
    if header:
        lines.append(
            f"{'night':>5} {'date':10} {'users':>6} {'policy':>23} {'best fixed':>23} {'random':>8} "
            f"{'oracle':>8} {'control':>7} {'policy - fixed':>24} {'sent':>6} {'conv':>5} {'model':>10}"
        )
    for r in rows:
        v = r.values

        def ci(x: Interval) -> str:
            return f"{x.mean:7.4f} [{x.lower:6.4f},{x.upper:6.4f}]"

        d = r.policy_minus_fixed
        lines.append(
            f"{r.night:>5} {r.campaign_date.isoformat():10} {r.treated:>6} {ci(v['policy']):>23} "
            f"{ci(v['best_fixed']):>23} {v['random'].mean:8.4f} {v['oracle'].mean:8.4f} {0.0:7.4f} "
            f"{d.mean:+7.4f} [{d.lower:+.4f},{d.upper:+.4f}] {r.outcomes.get('sent', 0):>6} "
            f"{r.outcomes.get('converted', 0):>5} {(r.training_mode or '-'):>10}"
        )
    return "\n".join(lines)


def save_results(rows: list[NightValues], out: Path, config: SimulateConfig) -> dict[str, Path]:
    """values.csv, values.json and values.png in `out`."""
    flat = [r.flat() for r in rows]
    paths = {"csv": out / "values.csv", "json": out / "values.json", "png": out / "values.png"}
    keys = list(flat[0]) if flat else []
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(flat)
    meta = {k: (str(v) if isinstance(v, Path | dt.date) else v) for k, v in dataclasses.asdict(config).items()}
    meta["start"] = config.first_night().isoformat()
    paths["json"].write_text(json.dumps({"config": meta, "nights": flat}, indent=2) + "\n")
    plot_values(rows, paths["png"], title=f"recsys simulate: {config.users:,} users, seed {config.seed}")
    return paths


def plot_values(rows: list[NightValues], path: Path, *, title: str = "recsys simulate") -> None:
    """True value per treated user and night: policy against the references, with 95% bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r.night for r in rows]
    styles = {
        "oracle": ("oracle (best offer per user)", "tab:green", ":"),
        "policy": ("policy (offers sent)", "tab:blue", "-"),
        "best_fixed": ("best single fixed offer", "tab:orange", "--"),
        "random": ("uniform random", "tab:gray", "-."),
        "control": ("control group (no offer)", "black", "-"),
    }
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, (label, colour, line) in styles.items():
        mean = [r.values[name].mean for r in rows]
        ax.plot(x, mean, line, color=colour, label=label, marker="o" if name == "policy" else None, lw=1.8)
        if name != "control":
            lo = [r.values[name].lower for r in rows]
            hi = [r.values[name].upper for r in rows]
            ax.fill_between(x, lo, hi, color=colour, alpha=0.15, lw=0)
    ax.set_xlabel("night")
    ax.set_ylabel("true value per treated user and night")
    ax.set_xticks(x)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
