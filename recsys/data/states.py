"""Users as the policy sees them on a night: their features as of a date and the channels each can
receive, read from `user_features` and `users` into a `recsys.model.observation.States`.
Called by evaluation, the recommendation command and the benchmarks; scoring reads its own wider
set in one binary COPY (`recsys.campaign.load`).
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np

from psycopg2 import sql

from recsys.config.settings import package_dir
from recsys.db import Connection, fetch_value
from recsys.db.sqlfiles import load_sql
from recsys.errors import RecsysError
from recsys.config.features import BEFORE_PRIORS_HINT
from recsys.model.observation import FEATURE_NAMES, N_FEATURES, STORED_FEATURES, States, normalise

log = logging.getLogger(__name__)


def load_states(
    conn: Connection,
    as_of: dt.date,
    user_ids: np.ndarray | None = None,
    *,
    max_users: int | None = None,
    seed: int = 0,
) -> States:
    """Every user with features as of `as_of` (or just `user_ids`), in user_id order.

    With `max_users`, a population larger than that is read as a uniform sample of about
    `max_users` users (each kept by a hash of its id with `seed`: the same users for the same seed),
    so that what the night's learning and evaluation hold in memory and compute on stays bounded
    however many users the shop has; scoring always reads everyone (`recsys.campaign.load`)."""
    features = sql.SQL(", ").join(sql.Identifier("f", name) for name in STORED_FEATURES)
    query = sql.SQL(load_sql(package_dir("sql"), "data/states")).format(features=features)
    ids = None if user_ids is None else [int(u) for u in np.asarray(user_ids)]
    rate = None
    if max_users is not None and ids is None:
        population = int(fetch_value(conn, load_sql(package_dir("sql"), "data/states_count"), {"as_of": as_of}))
        rate = max_users / population if population > max_users else None
    with conn.cursor() as cur:
        cur.execute(query, {"as_of": as_of, "ids": ids, "rate": rate, "seed": seed})
        rows = cur.fetchall()
    if rate is not None:
        log.info("states as of %s: a sample of %d of %d users (max_users %d)", as_of, len(rows), population, max_users)
    n = len(rows)
    if n == 0:
        empty = np.zeros((0, N_FEATURES))
        return States(
            as_of, np.zeros(0, np.int64), empty, empty.astype(np.float32), np.zeros((0, 3), bool), np.zeros(0, object)
        )
    table = np.array(rows, dtype=object)
    stored = table[:, 1 : 1 + N_FEATURES]
    missing = np.equal(stored, None)
    if missing.any():
        names = [FEATURE_NAMES[j] for j in np.flatnonzero(missing.any(axis=0))]
        hint = BEFORE_PRIORS_HINT.replace("DATE", str(as_of))
        raise RecsysError(f"the features as of {as_of} have no {', '.join(names[:3])}{hint}")
    raw = stored.astype(np.float64)
    channel_ok = table[:, 1 + N_FEATURES : 4 + N_FEATURES].astype(bool)
    return States(
        as_of=as_of,
        user_ids=table[:, 0].astype(np.int64),
        raw=raw,
        obs=normalise(raw),
        channel_ok=channel_ok,
        top_category=table[:, -1],
        population=population if rate is not None else None,
    )
