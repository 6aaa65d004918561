"""Observations: the policy's view of a user, built from `recsys.user_features` and consent.

One definition shared by the environment (training), the batch policy API (scoring), the
response model and evaluation, so that a model always sees features scaled the same way. The
feature-set fingerprint is stored with every model; a model is never used on a different set.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from recsys.catalog import Catalog
from recsys.db import Connection

# (column in user_features or users, transform, scale): every value ends up roughly in [0, 1].
# The consent flags stay last: readers of user_features select FEATURE_NAMES[:-3].
FEATURES: tuple[tuple[str, str, float], ...] = (
    ("recency_days", "linear", 365.0),
    ("frequency_sessions", "log1p", 100.0),
    ("monetary_value", "log1p", 5000.0),
    ("engagement_score", "linear", 1.0),
    ("discount_sensitivity", "linear", 1.0),
    ("free_shipping_preference", "linear", 1.0),
    ("email_responsiveness", "linear", 1.0),
    ("sms_responsiveness", "linear", 1.0),
    ("push_responsiveness", "linear", 1.0),
    ("days_since_last_purchase", "linear", 365.0),
    ("purchase_count", "log1p", 50.0),
    ("offers_last_7d", "linear", 7.0),
    ("days_since_last_offer", "linear", 365.0),
    ("morning_share", "linear", 1.0),
    ("evening_share", "linear", 1.0),
    ("category_focus", "linear", 1.0),
    ("email_consent", "linear", 1.0),
    ("sms_consent", "linear", 1.0),
    ("push_consent", "linear", 1.0),
)
FEATURE_NAMES = tuple(name for name, _, _ in FEATURES)
N_FEATURES = len(FEATURES)


def feature_fingerprint() -> str:
    """sha256 of the observation definition: equal fingerprints mean identical inputs."""
    return hashlib.sha256(json.dumps(FEATURES, separators=(",", ":")).encode()).hexdigest()


def normalise(raw: np.ndarray) -> np.ndarray:
    """Raw feature columns (n, N_FEATURES) in FEATURES order -> float32 observations in [0, 1]."""
    raw = np.asarray(raw, dtype=np.float64)
    out = np.empty(raw.shape, dtype=np.float32)
    for j, (_, transform, scale) in enumerate(FEATURES):
        col = np.maximum(raw[:, j], 0.0)
        out[:, j] = np.log1p(col) / np.log1p(scale) if transform == "log1p" else col / scale
    return np.clip(out, 0.0, 1.0)


@dataclass(frozen=True)
class States:
    """Users as of a date: ids, raw features, observations, and the channels each can receive."""

    as_of: dt.date
    user_ids: np.ndarray  # int64 (n,)
    raw: np.ndarray  # float64 (n, N_FEATURES), FEATURES order
    obs: np.ndarray  # float32 (n, N_FEATURES)
    channel_ok: np.ndarray  # bool (n, 3): email, sms, push: consent and an address
    top_category: np.ndarray  # object (n,)

    def __len__(self) -> int:
        return len(self.user_ids)

    def action_mask(self, catalog: Catalog) -> np.ndarray:
        """bool (n, n_actions): actions whose channel the user can receive."""
        channel_index = {"email": 0, "sms": 1, "push": 2}
        cols = np.array([channel_index[a.channel] for a in catalog.actions])
        return self.channel_ok[:, cols]


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
