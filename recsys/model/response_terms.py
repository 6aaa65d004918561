"""The response model's terms: its heads, the action attributes, and which coefficients each head has.

`recsys.model.response` (the model) and `recsys.model.response_fit` (its fit) read the structure
from here: the behaviour features' terms per head (`HEAD_TERMS`), the prior-shrunk features' terms
(`PRIOR_SHRUNK_TERMS`), and the masks of the coefficients that exist (`_masks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.config.catalog import ALLOWED_CHANNELS, ALLOWED_OFFER_TYPES, Catalog
from recsys.config.features import PRIOR_SHRUNK_FEATURES
from recsys.config.reward import PREFERENCE_FEATURES, RewardRules
from recsys.model.observation import FEATURE_NAMES

HEADS = ("open", "click", "convert", "unsubscribe", "order_value")
"""The model's heads: four stage probabilities (conditional on the previous stage) and the order value."""

STAGES = HEADS[:4]

DESIGN_FEATURES = PREFERENCE_FEATURES
"""Observation features the heads read: all but the consent flags."""

SEND_TIME_FEATURES = ("morning_share", "evening_share")
"""The behaviour features that say when in the day a user shops: the open head's timings read these."""

PREFERENCES = "preferences"
"""In `HEAD_TERMS`: the features the `[reward]` config names as the offer types' preferences."""

HEAD_TERMS: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...] | str | None], tuple[str, ...] | None]] = {
    # head: (attribute groups with a main effect,
    #        groups interacting with the behaviour features: the features each one reads
    #        (None: all design features; PREFERENCES: the offer types' configured preferences),
    #        features with a main effect: None = all design features)
    "open": (("channel", "timing"), {"channel": None, "timing": SEND_TIME_FEATURES}, None),
    "click": (("channel", "type", "value", "level"), {"channel": None, "type": None, "value": None}, None),
    "convert": (("type", "value"), {"type": PREFERENCES, "value": PREFERENCES}, None),
    "unsubscribe": (("channel",), {}, ("offers_last_7d",)),
    "order_value": (("type",), {}, None),
}
"""Which terms each head has; the others are fixed at 0. The click head's "level" attributes give
an offer type without a configured value effect (`value_effect = "none"`, the recommendation's
number of products) a value curve of any shape through the catalog's values (main effects, and a
slope on the category focus per value, `PRIOR_SHRUNK_TERMS`): its "value" attribute alone makes its
appeal monotone in the value, and the logs show more clicks on a middle number of recommended
products than on either end. A type with a configured effect keeps that shape (its levels are 0):
free levels there follow the noise of each value's few clicks.

Two heads read fewer behaviour features in their interactions than they could, because the logs
cannot pay for more: a timing's open rate moves with the time of day a user shops (the morning and
evening shares), and the conversion, learnt from a few thousand clicks, reads only the features the
offer types name as their preference (dozens of slopes per offer type on a few hundred conversions
mostly follow noise). Measured in docs/decision-quality.md: greedy on the model gains 0.007 to
0.015 normalised; the held-out log loss of the open stage is lower, the conversion's level."""

ADDED_ATTRIBUTE_GROUPS = ("level",)
"""Attribute groups added after models were first stored: a stored model without them reads as
one whose coefficients on them are 0 (`recsys.model.response.ResponseModel.from_dict`)."""

_DESIGN_IDX = np.array([FEATURE_NAMES.index(n) for n in DESIGN_FEATURES])


# --- action attributes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Attributes:
    """Names of the action attributes and which group each belongs to."""

    names: tuple[str, ...]
    groups: tuple[str, ...]

    @classmethod
    def of(cls, catalog: Catalog) -> _Attributes:
        names, groups = [], []
        for group, items in (
            ("channel", catalog.channels),
            ("timing", catalog.timings),
            ("type", catalog.offer_types),
            ("value", catalog.offer_types),
            ("level", [f"{t}:{v:g}" for t in catalog.offer_types for v in sorted(catalog.values)]),
        ):
            names += [f"{group}:{item}" for item in items]
            groups += [group] * len(items)
        return cls(tuple(names), tuple(groups))

    def index(self, name: str) -> int:
        return self.names.index(name)

    def rows(
        self,
        catalog: Catalog,
        rules: RewardRules,
        type_idx: np.ndarray,
        value: np.ndarray,
        channel_idx: np.ndarray,
        timing_idx: np.ndarray,
    ) -> np.ndarray:
        """Attribute rows (n, K) of offers given as catalog indices of type, channel, timing and a value."""
        n = len(type_idx)
        a = np.zeros((n, len(self.names)))
        rows = np.arange(n)
        nc, nt, nk = len(catalog.channels), len(catalog.timings), len(catalog.offer_types)
        a[rows, channel_idx] = 1.0
        a[rows, nc + timing_idx] = 1.0
        a[rows, nc + nt + type_idx] = 1.0
        value = np.asarray(value, dtype=np.float64)
        scaled = np.zeros(n)
        for k, offer_type in enumerate(catalog.offer_types):
            prior = rules.offer_types[offer_type]
            sel = type_idx == k
            if prior.value_effect == "decay":
                scaled[sel] = np.exp(-value[sel] / prior.value_reference)
            else:
                # "none" keeps value / reference as the attribute, so the fit can still find a value effect
                scaled[sel] = value[sel] / prior.value_reference
        a[rows, nc + nt + nk + type_idx] = scaled
        # the level curve bends the value trend of the types with no configured value effect only
        levels = np.array(sorted(catalog.values), dtype=np.float64)
        shapeless = np.array([rules.offer_types[t].value_effect == "none" for t in catalog.offer_types])
        a[:, nc + nt + 2 * nk :] = _level_weights(type_idx, value, levels, nk) * np.repeat(shapeless, len(levels))
        return a


def _level_weights(type_idx: np.ndarray, value: np.ndarray, levels: np.ndarray, n_types: int) -> np.ndarray:
    """The offer's value as weights on its type's levels (n, n_types x len(levels)): 1 on a catalog
    value, split linearly between the two catalog values around a value in between, all on the
    nearest end outside them. Their coefficients draw a value curve of any shape per type through
    the catalog's values (a recommendation's best number of products lies inside the range)."""
    n, m = len(type_idx), len(levels)
    out = np.zeros((n, n_types * m))
    if m == 1:
        out[np.arange(n), type_idx] = 1.0
        return out
    v = np.clip(value, levels[0], levels[-1])
    hi = np.clip(np.searchsorted(levels, v, side="right"), 1, m - 1)
    share = (v - levels[hi - 1]) / (levels[hi] - levels[hi - 1])
    out[np.arange(n), type_idx * m + hi - 1] = 1.0 - share
    out[np.arange(n), type_idx * m + hi] += share
    return out


def _catalog_attribute_rows(catalog: Catalog, rules: RewardRules, attrs: _Attributes) -> np.ndarray:
    """Attribute rows (n_actions, K); the rest's row is all zeros (it has no attributes)."""
    actions = [a for a in catalog.actions if not a.is_rest]
    rows = attrs.rows(
        catalog,
        rules,
        np.array([catalog.offer_types.index(a.offer_type) for a in actions]),
        np.array([a.value for a in actions]),
        np.array([catalog.channels.index(a.channel) for a in actions]),
        np.array([catalog.timings.index(a.timing) for a in actions]),
    )
    return np.vstack([rows, np.zeros((catalog.n_actions - len(actions), rows.shape[1]))])


def _prior_shrunk_terms() -> dict[str, dict[str, tuple[str, ...]]]:
    """Per head, the prior-shrunk features it reads and the action attributes each one interacts
    with ("*" ends a prefix; "main": a main effect): a user's own shrunk rate of a stage meets the
    stage's channel or offer type, nothing else. Each is one slope per attribute, so the structure
    stays small on little data."""
    terms: dict[str, dict[str, tuple[str, ...]]] = {h: {} for h in HEADS}
    for c in ALLOWED_CHANNELS:
        terms["open"][f"{c}_open_rate"] = (f"channel:{c}",)
        terms["click"][f"{c}_click_rate"] = (f"channel:{c}",)
    for t in ALLOWED_OFFER_TYPES:
        terms["click"][f"{t}_click_rate"] = (f"type:{t}", f"value:{t}")
        terms["convert"][f"{t}_convert_rate"] = (f"type:{t}", f"value:{t}")
    for f in PURCHASE_SHARES:
        terms["click"][f] = terms["convert"][f] = ("type:*", "value:*")
    # the focus also bends the value curve of the types without a configured value effect: the
    # number of recommended products a focused user clicks most differs from a browsing one's
    terms["click"]["category_focus_posterior"] = ("type:*", "value:*", "level:*")
    terms["convert"]["category_focus_posterior"] = ("type:*", "value:*")
    terms["order_value"]["order_value"] = ("main",)
    return terms


PURCHASE_SHARES = (
    "organic_discount_share",
    "offer_discount_share",
    "organic_free_shipping_share",
    "offer_free_shipping_share",
)
PRIOR_SHRUNK_TERMS = _prior_shrunk_terms()
"""Where the prior-shrunk features (`recsys.config.features.PRIOR_SHRUNK_FEATURES`) enter the heads."""
_PRIOR_SHRUNK = frozenset(name for name, _, _ in PRIOR_SHRUNK_FEATURES)
PRIOR_SHRUNK_DESIGN = np.array([f in _PRIOR_SHRUNK for f in DESIGN_FEATURES])
"""Per design feature: it is a prior-shrunk one (its terms get `FitConfig.l2_prior_shrunk`)."""


def preference_features(rules: RewardRules) -> frozenset[str]:
    """The features the offer types of the `[reward]` config name as their preference."""
    return frozenset(prior.preference for prior in rules.offer_types.values())


def _masks(attrs: _Attributes, head: str, preferences: frozenset[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """0/1 masks of (w, gamma, D) for a head: which coefficients exist. The behaviour features
    follow `HEAD_TERMS` (`preferences`: what `PREFERENCES` stands for, `preference_features`), the
    prior-shrunk ones `PRIOR_SHRUNK_TERMS`."""
    main_groups, inter_groups, main_features = HEAD_TERMS[head]
    prior = PRIOR_SHRUNK_TERMS[head]
    mw = np.array(
        [
            "main" in prior.get(f, ()) if f in _PRIOR_SHRUNK else main_features is None or f in main_features
            for f in DESIGN_FEATURES
        ],
        dtype=np.float64,
    )
    mg = np.array([g in main_groups for g in attrs.groups], dtype=np.float64)
    md = np.zeros((len(attrs.names), len(DESIGN_FEATURES)))
    for j, f in enumerate(DESIGN_FEATURES):
        if f not in _PRIOR_SHRUNK:
            md[:, j] = [g in inter_groups and _reads(inter_groups[g], f, preferences) for g in attrs.groups]
            continue
        for pattern in prior.get(f, ()):
            for i, name in enumerate(attrs.names):
                if name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1])):
                    md[i, j] = 1.0
    return mw, mg, md


def _reads(features: tuple[str, ...] | str | None, feature: str, preferences: frozenset[str]) -> bool:
    """Whether an attribute group that reads `features` (a `HEAD_TERMS` entry) interacts with `feature`."""
    if features is None:
        return True
    if features == PREFERENCES:
        return feature in preferences
    return feature in features
