"""The simulated sender and the database side of a night: send every published offer on the
simulated clock, read what the valuation needs, record the users' responses."""

from __future__ import annotations

import datetime as dt

import numpy as np

from recsys.benchmark.simulate.config import SENDER_WORKER, midnight
from recsys.benchmark.simulate.users import Responses, SentOffers
from recsys.config import Config
from recsys.config.settings import package_dir
from recsys.db import Connection, fetch_all
from recsys.db.sqlfiles import load_sql


def _sql(name: str) -> str:
    """sql/simulate/<name>.sql, shipped with the package (the simulation plays the sender's side)."""
    return load_sql(package_dir("sql"), f"simulate/{name}")


def send_all(conn: Connection, night: dt.date, config: Config, *, publish_hour_utc: float = 1.0) -> SentOffers:
    """Mark every scheduled offer of the night's published runs sent, at its send time on the
    simulated clock.

    Scoring and publishing stamp `scheduled_at` with the real publish moment (the wall clock), which
    for a simulated night in the past is days later. The simulated sender recomputes each offer's
    send time with the same SQL (`recsys.offer_schedule`: release, delay, quiet hours; a best_hour
    offer at its user's best hour, `recsys.best_send_time`) as if the run
    had been published at `publish_hour_utc` on the night, and sends it then, under `config`'s
    catalog (delays) and campaign rules (send time, quiet hours).
    """
    rules, catalog = config.rules, config.catalog
    channels = list(catalog.channels)
    quiet = [rules.quiet_hours.get(ch, (None, None)) for ch in channels]
    publish_at = midnight(night) + dt.timedelta(hours=publish_hour_utc)
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
            "validity": rules.validity_hours,
            "best_default": rules.best_hour_default,
            "min_certainty": rules.best_hour_min_certainty,
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


def offers_by_night(conn: Connection, night: dt.date, user_ids: np.ndarray, days: int = 7) -> np.ndarray:
    """(n, days) offers each user got on each of the `days` nights before `night` (column 0: the
    earliest), past campaigns and the system's own."""
    ids = np.asarray(user_ids, dtype=np.int64)
    out = np.zeros((len(ids), days))
    rows = fetch_all(
        conn,
        _sql("offers_by_night"),
        {"lo": night - dt.timedelta(days=days), "night": night, "ids": [int(u) for u in ids]},
    )
    if rows and len(ids):
        users = np.array([r["user_id"] for r in rows], dtype=np.int64)
        col = np.array([days - (night - r["night"]).days for r in rows], dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        pos = order[np.searchsorted(ids[order], users)]
        np.add.at(out, (pos, col), np.array([r["n"] for r in rows], dtype=np.float64))
    return out
