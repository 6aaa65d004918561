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
from recsys.config.features import CONSENT_FEATURES, FEATURE_NAMES, FEATURES, STORED_FEATURES

__all__ = [
    "CONSENT_FEATURES",
    "FEATURES",
    "FEATURE_NAMES",
    "N_FEATURES",
    "STORED_FEATURES",
    "States",
    "feature_fingerprint",
    "normalise",
]

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
    channel_ok: np.ndarray  # bool (n, 3): per ALLOWED_CHANNELS, consent and an address
    top_category: np.ndarray  # object (n,)

    def __len__(self) -> int:
        return len(self.user_ids)

    def action_mask(self, catalog: Catalog) -> np.ndarray:
        """bool (n, n_actions): actions whose channel the user can receive; the rest wherever some
        offer is."""
        return catalog.action_mask(self.channel_ok)
