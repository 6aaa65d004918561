"""The observation's feature columns, grouped: one list that every reader takes its columns from.

Each feature is (column, transform, scale); `recsys.model.observation` turns the raw columns into
the policy's inputs with these transforms. The columns come from two tables: `user_features`
holds `STORED_FEATURES`, `users` the consent flags (`CONSENT_FEATURES`, one per channel, in
`ALLOWED_CHANNELS` order). Readers select by group, never by position.
"""

from __future__ import annotations

from recsys.config.catalog import ALLOWED_CHANNELS

CONSENT_FEATURES: tuple[str, ...] = tuple(f"{channel}_consent" for channel in ALLOWED_CHANNELS)
"""Consent per channel (from `users`, as of the date), in `ALLOWED_CHANNELS` order."""

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
    *((name, "linear", 1.0) for name in CONSENT_FEATURES),
)
"""(column, transform, scale) per feature, in the observation's order: every value ends up roughly in [0, 1]."""

FEATURE_NAMES: tuple[str, ...] = tuple(name for name, _, _ in FEATURES)
"""The observation's columns, in order."""

STORED_FEATURES: tuple[str, ...] = tuple(name for name in FEATURE_NAMES if name not in CONSENT_FEATURES)
"""The observation's columns that `user_features` stores (everything but consent)."""

if FEATURE_NAMES != STORED_FEATURES + CONSENT_FEATURES:  # the loaders read stored columns, then consent
    raise ImportError("FEATURES must list the stored features first and the consent flags last")

PREFERENCE_FEATURES: tuple[str, ...] = STORED_FEATURES
"""Features an offer type's appeal may depend on (consent says what can be sent, not appeal)."""
