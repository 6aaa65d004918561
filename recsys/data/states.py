"""Users as the policy sees them on a night: their features as of a date and the channels each can
receive, read from `user_features` and `users` into a `recsys.model.observation.States`.
Called by evaluation, the recommendation command and the benchmarks; scoring reads its own wider
set in one binary COPY (`recsys.campaign.load`).
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from psycopg2 import sql

from recsys.config.settings import package_dir
from recsys.db import Connection
from recsys.db.sqlfiles import load_sql
from recsys.errors import RecsysError
from recsys.config.features import BEFORE_PRIORS_HINT
from recsys.model.observation import FEATURE_NAMES, N_FEATURES, STORED_FEATURES, States, normalise


def load_states(conn: Connection, as_of: dt.date, user_ids: np.ndarray | None = None) -> States:
    """Every user with features as of `as_of` (or just `user_ids`), in user_id order."""
    features = sql.SQL(", ").join(sql.Identifier("f", name) for name in STORED_FEATURES)
    query = sql.SQL(load_sql(package_dir("sql"), "data/states")).format(features=features)
    ids = None if user_ids is None else [int(u) for u in np.asarray(user_ids)]
    with conn.cursor() as cur:
        cur.execute(query, {"as_of": as_of, "ids": ids})
        rows = cur.fetchall()
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
    )
