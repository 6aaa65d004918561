"""Users as the policy sees them on a night: their features as of a date and the channels each can
receive, read from `user_features` and `users` into a `recsys.model.observation.States`.
Called by evaluation, the recommendation command and the benchmarks; scoring reads its own wider
set in one binary COPY (`recsys.campaign.load`).
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from recsys.db import Connection
from recsys.model.observation import FEATURE_NAMES, N_FEATURES, States, normalise


def load_states(conn: Connection, as_of: dt.date, user_ids: np.ndarray | None = None) -> States:
    """Every user with features as of `as_of` (or just `user_ids`), in user_id order."""
    feature_cols = ", ".join(f"f.{n}" for n in FEATURE_NAMES[:-3])
    query = f"""
        select f.user_id, {feature_cols},
               coalesce(u.email_opt_in, false), coalesce(u.sms_opt_in, false), coalesce(u.push_opt_in, false),
               coalesce(u.email_opt_in and u.email is not null, false),
               coalesce(u.sms_opt_in and u.phone is not null, false),
               coalesce(u.push_opt_in and u.push_token is not null, false),
               f.top_category
        from recsys.user_features as f
        left join recsys.users as u on u.user_id = f.user_id
        where f.as_of = %(as_of)s and (%(ids)s::bigint[] is null or f.user_id = any(%(ids)s::bigint[]))
        order by f.user_id
    """  # noqa: S608 - column names come from the FEATURES constant, values are parameters
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
    raw = table[:, 1 : 1 + N_FEATURES].astype(np.float64)
    channel_ok = table[:, 1 + N_FEATURES : 4 + N_FEATURES].astype(bool)
    return States(
        as_of=as_of,
        user_ids=table[:, 0].astype(np.int64),
        raw=raw,
        obs=normalise(raw),
        channel_ok=channel_ok,
        top_category=table[:, -1],
    )
