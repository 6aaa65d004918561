"""The observation's feature columns, grouped: one list that every reader takes its columns from.

Each feature is (column, transform, scale); `recsys.model.observation` turns the raw columns into
the policy's inputs with these transforms. The columns come from two tables: `user_features`
holds `STORED_FEATURES`, `users` the consent flags (`CONSENT_FEATURES`, one per channel, in
`ALLOWED_CHANNELS` order). Readers select by group, never by position.

The observation grows by appending stored columns; a column, once in it, keeps its transform and
scale. Every earlier observation is kept in `EARLIER_FEATURE_SETS`, so that a model registered on
one keeps scoring: it reads its own columns out of today's observation
(`recsys.model.observation.feature_columns`).
"""

from __future__ import annotations

from recsys.config.catalog import ALLOWED_CHANNELS, ALLOWED_OFFER_TYPES

Feature = tuple[str, str, float]
"""(column, transform, scale)."""

CONSENT_FEATURES: tuple[str, ...] = tuple(f"{channel}_consent" for channel in ALLOWED_CHANNELS)
"""Consent per channel (from `users`, as of the date), in `ALLOWED_CHANNELS` order."""

_CONSENT: tuple[Feature, ...] = tuple((name, "linear", 1.0) for name in CONSENT_FEATURES)

BEHAVIOUR_FEATURES: tuple[Feature, ...] = (
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
)
"""The seed's ten columns, the contact history and the send-time and category shares (migrations
001 and 003)."""

PRIOR_SHRUNK_FEATURES: tuple[Feature, ...] = (
    *((f"{channel}_open_rate", "linear", 1.0) for channel in ALLOWED_CHANNELS),
    *((f"{channel}_click_rate", "linear", 1.0) for channel in ALLOWED_CHANNELS),
    *((f"{offer_type}_click_rate", "linear", 1.0) for offer_type in ALLOWED_OFFER_TYPES),
    *((f"{offer_type}_convert_rate", "linear", 1.0) for offer_type in ALLOWED_OFFER_TYPES),
    ("organic_discount_share", "linear", 1.0),
    ("offer_discount_share", "linear", 1.0),
    ("organic_free_shipping_share", "linear", 1.0),
    ("offer_free_shipping_share", "linear", 1.0),
    ("category_focus_posterior", "linear", 1.0),
    ("order_value", "log1p", 1000.0),
)
"""Posterior means under population priors fitted to the users of the date (migration 013,
sql/features/user_features.sql): funnel rates per channel and per offer type, purchase shares
with offer-driven use kept apart, category focus and order value. Never null on a date built
since migration 013 (`recsys features --backfill` rebuilds older dates)."""

BEFORE_PRIORS_HINT = (
    " (built before migration 013 added the prior-shrunk columns): rebuild the date with "
    "`recsys features --as-of DATE`, or every such date with `recsys features --backfill`"
)
"""What to do about a date whose features lack `PRIOR_SHRUNK_FEATURES`; ends error messages."""

FEATURES: tuple[Feature, ...] = (*BEHAVIOUR_FEATURES, *PRIOR_SHRUNK_FEATURES, *_CONSENT)
"""(column, transform, scale) per feature, in the observation's order: every value ends up roughly in [0, 1]."""

EARLIER_FEATURE_SETS: tuple[tuple[Feature, ...], ...] = ((*BEHAVIOUR_FEATURES, *_CONSENT),)
"""Observations of earlier versions that registered models may read: before migration 013's columns."""

FEATURE_NAMES: tuple[str, ...] = tuple(name for name, _, _ in FEATURES)
"""The observation's columns, in order."""

STORED_FEATURES: tuple[str, ...] = tuple(name for name in FEATURE_NAMES if name not in CONSENT_FEATURES)
"""The observation's columns that `user_features` stores (everything but consent)."""

if FEATURE_NAMES != STORED_FEATURES + CONSENT_FEATURES:  # the loaders read stored columns, then consent
    raise ImportError("FEATURES must list the stored features first and the consent flags last")
if any(not set(earlier) <= set(FEATURES) for earlier in EARLIER_FEATURE_SETS):
    raise ImportError("every column of an earlier feature set must stay in FEATURES with its transform and scale")

PREFERENCE_FEATURES: tuple[str, ...] = STORED_FEATURES
"""Features an offer type's appeal may depend on (consent says what can be sent, not appeal)."""
