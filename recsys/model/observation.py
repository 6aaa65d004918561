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

from recsys.config.catalog import Catalog

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
