"""Observations: the policy's view of a user, built from `recsys.user_features` and consent.

One definition shared by the environment (training), the batch policy API (scoring), the
response model and evaluation, so that a model always sees features scaled the same way. The
feature-set fingerprint is stored with every model. A model trained on an earlier feature set
(`recsys.config.features.EARLIER_FEATURE_SETS`) reads its own columns out of today's observation
(`feature_columns`); a set this version does not know is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from recsys.config.catalog import Catalog
from recsys.config.features import (
    CONSENT_FEATURES,
    EARLIER_FEATURE_SETS,
    FEATURE_NAMES,
    FEATURES,
    STORED_FEATURES,
    Feature,
)
from recsys.errors import RecsysError

__all__ = [
    "CONSENT_FEATURES",
    "FEATURES",
    "FEATURE_NAMES",
    "N_FEATURES",
    "STORED_FEATURES",
    "States",
    "columns_of_width",
    "feature_columns",
    "feature_fingerprint",
    "normalise",
]

N_FEATURES = len(FEATURES)


def fingerprint_of(features: tuple[Feature, ...]) -> str:
    """sha256 of an observation definition: equal fingerprints mean identical inputs."""
    return hashlib.sha256(json.dumps(features, separators=(",", ":")).encode()).hexdigest()


def feature_fingerprint() -> str:
    """The fingerprint of today's observation (`FEATURES`)."""
    return _CURRENT


_CURRENT = fingerprint_of(FEATURES)
_POSITION = {feature: j for j, feature in enumerate(FEATURES)}
_KNOWN: dict[str, np.ndarray] = {
    fingerprint_of(s): np.array([_POSITION[f] for f in s], dtype=np.int64) for s in EARLIER_FEATURE_SETS
}


def feature_columns(fingerprint: str) -> np.ndarray | None:
    """Where the columns of the feature set `fingerprint` sit in today's observation, in that set's
    order: None for today's set (all columns, as they are), the positions for an earlier set.
    Raises RecsysError for a set this version does not know (a newer version's, or a changed one)."""
    if fingerprint == _CURRENT:
        return None
    try:
        return _KNOWN[fingerprint]
    except KeyError:
        raise RecsysError(
            f"feature set {fingerprint[:12]} is not one this version knows "
            f"(today's {_CURRENT[:12]}, earlier {', '.join(f[:12] for f in _KNOWN) or 'none'})"
        ) from None


def normalise(raw: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Raw feature columns (n, N_FEATURES) in FEATURES order -> float32 observations in [0, 1].

    Each column is transformed in float64 and rounded once to float32, one column at a time (no
    float64 copy of the whole matrix). `out`: a float32 (n, N_FEATURES) array to write into, which
    may be `raw` itself (normalised in place; a column-major one is the fastest).
    """
    raw = np.asarray(raw)
    if out is None:
        out = np.empty(raw.shape, dtype=np.float32)
    elif out.dtype != np.float32 or out.shape != raw.shape:
        raise ValueError(f"normalise: out must be float32 of shape {raw.shape}, got {out.dtype} {out.shape}")
    for j, (_, transform, scale) in enumerate(FEATURES):
        col = np.maximum(raw[:, j].astype(np.float64), 0.0)
        out[:, j] = np.log1p(col) / np.log1p(scale) if transform == "log1p" else col / scale
    return np.clip(out, 0.0, 1.0, out=out)


def columns_of_width(width: int) -> np.ndarray | None:
    """`feature_columns` of the feature set with `width` columns (None: today's); raises RecsysError
    when no set, or more than one, has that width. For a saved network, which knows only its width."""
    if width == N_FEATURES:
        return None
    matches = [columns for columns in _KNOWN.values() if len(columns) == width]
    if len(matches) != 1:
        raise RecsysError(
            f"no single feature set has {width} columns (today's has {N_FEATURES}, earlier "
            f"{', '.join(str(len(c)) for c in _KNOWN.values()) or 'none'})"
        )
    return matches[0]


@dataclass(frozen=True)
class States:
    """Users as of a date: ids, raw features, observations, and the channels each can receive."""

    as_of: dt.date
    user_ids: np.ndarray  # int64 (n,)
    raw: np.ndarray  # float64 (n, N_FEATURES), FEATURES order
    obs: np.ndarray  # float32 (n, N_FEATURES)
    channel_ok: np.ndarray  # bool (n, 3): per ALLOWED_CHANNELS, consent and an address
    top_category: np.ndarray  # object (n,)
    population: int | None = None
    """How many users these stand for when they are a uniform sample of them; None: all of them."""

    def __len__(self) -> int:
        return len(self.user_ids)

    def action_mask(self, catalog: Catalog) -> np.ndarray:
        """bool (n, n_actions): actions whose channel the user can receive; the rest wherever some
        offer is."""
        return catalog.action_mask(self.channel_ok)
