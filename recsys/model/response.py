"""Response model: how a user responds to an offer, and what the offer is then worth.

The probability of each stage of an offer's outcome given the user's observation (the normalised
features of `recsys.model.observation`) and the action, estimated from the logged offers in PostgreSQL
(`recsys.v_logged_offers`) and starting from the business-rule priors of the `[reward]` config
section when there are no logs. The environment (`recsys.model.env`) simulates users with it, training
and evaluation read its rewards, and every registered policy stores it (`to_dict`) with its fit on
held-out logs (`fit_report`).

The model. Each head is a logistic model (the order value a log-linear one) of the same form:

    logit = w . x  +  gamma . a  +  a' D x

with x the observation's behaviour and contact-history features (`DESIGN_FEATURES`: the consent
flags decide what can be sent, not how a user responds, so they are left out: an unsubscribe from
one channel must not change the predicted response on another) and a the action's attributes:
one-hot channel, timing and offer type, and per offer type its value effect (value / reference, or
exp(-value / reference), see the config), and its level: weights on the type's catalog values, so
that the appeal of a type without a configured value effect may peak at a middle value (the click
head only). The interaction D lets preferences differ per user (discount_sensitivity x discount
value, email_responsiveness x email, ...). Each head uses the terms its stage can identify
(`HEAD_TERMS`; the structure lives in `recsys.model.response_terms`): opens, with many positives,
carry the channel and timing signal; clicks and conversions, rarer, the offer-type signal.

The prior-shrunk features (each user's own funnel rates, purchase shares, category focus and order
value as posterior means, `recsys.config.features.PRIOR_SHRUNK_FEATURES`) enter only where their
stage meets them (`PRIOR_SHRUNK_TERMS`): a channel's open rate in the open head next to that
channel, an offer type's click and convert rates next to that type, the shares and the focus next
to the offer types (the focus also next to each catalog value of a type without a configured value
effect, in the click head), the order value in the order value head; their slopes are held near 0 by their
own prior (`FitConfig.l2_prior_shrunk`).

    P(open | x, a)                 channel, timing; channel x features, timing x the morning and
                                   evening shares; fatigue via offers_last_7d
    P(click | open, x, a)          channel, type, value; each x features; the value's level per
                                   type, and its slope on the category focus
    P(convert | click, x, a)       type, value; each x the offer types' preference features
    P(unsubscribe | open, x, a)    channel; offers_last_7d (learned from the system's own offers,
                                   whose unsubscribes are recorded; past campaigns have none: with
                                   only those it is the prior)
    E[order value | convert]       basket(x) x exp(type + w . x), basket = monetary_value /
                                   purchase_count, or the configured default without purchases

Fitting (`recsys.model.response_fit`) is maximum a posteriori with a Gaussian prior centred on the
prior model's coefficients, so a head with few examples stays at the business rules and moves away
from them as logs accumulate ("shrink toward the prior").

The reward of an action for a user (`expected_reward`):

    P(open) P(click | open) P(convert | click) x (margin_rate x order value - offer cost)
    - contact cost - unsubscribe_penalty x P(open) P(unsubscribe | open)

and 0 for an action on a channel whose consent flag (observation entries `<channel>_consent`) is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from recsys.config.catalog import ALLOWED_CHANNELS, Catalog
from recsys.config.reward import RewardRules
from recsys.errors import ConfigError, RecsysError
from recsys.model.observation import FEATURE_NAMES, FEATURES, N_FEATURES, feature_columns, feature_fingerprint
from recsys.model.response_terms import (
    ADDED_ATTRIBUTE_GROUPS,
    DESIGN_FEATURES,
    HEADS,
    _Attributes,
    _catalog_attribute_rows,
    _masks,
    preference_features,
)

FORMAT = "recsys.model.response/1"
"""Version of the `to_dict` layout."""

_CONSENT_IDX = {c: FEATURE_NAMES.index(f"{c}_consent") for c in ALLOWED_CHANNELS}
_FEATURE = {name: (i, transform, scale) for i, (name, transform, scale) in enumerate(FEATURES)}
_LOGIT_CLIP = 40.0


# --- small numeric helpers ------------------------------------------------------------------------


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -_LOGIT_CLIP, _LOGIT_CLIP)))


def raw_feature(obs: np.ndarray, name: str) -> np.ndarray:
    """Undo `recsys.model.observation.normalise` for one feature (exact below the feature's cap)."""
    j, transform, scale = _FEATURE[name]
    col = np.asarray(obs, dtype=np.float64)[:, j]
    return np.expm1(col * math.log1p(scale)) if transform == "log1p" else col * scale


def basket_value(obs: np.ndarray, default_order_value: float) -> np.ndarray:
    """The user's average order value in the feature window, or the default without purchases."""
    purchases = np.rint(raw_feature(obs, "purchase_count"))
    monetary = raw_feature(obs, "monetary_value")
    with np.errstate(divide="ignore", invalid="ignore"):
        basket = monetary / purchases
    return np.where((purchases >= 1) & (monetary > 0), basket, default_order_value)


# --- parameters -------------------------------------------------------------------------------------


@dataclass
class HeadParams:
    """Coefficients of one head: features (w), action attributes (gamma), interactions (D)."""

    w: np.ndarray  # (d,)
    gamma: np.ndarray  # (K,)
    D: np.ndarray  # (K, d)

    def copy(self) -> HeadParams:
        return HeadParams(self.w.copy(), self.gamma.copy(), self.D.copy())

    def logits(self, x: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Logits of rows with design features x (n, d) and attribute rows a (n, K)."""
        return x @ self.w + a @ self.gamma + np.einsum("nk,kd,nd->n", a, self.D, x, optimize=True)


def _prior_params(catalog: Catalog, rules: RewardRules, attrs: _Attributes) -> dict[str, HeadParams]:
    """The business rules of the config as coefficients of the model's heads."""
    d, k = len(DESIGN_FEATURES), len(attrs.names)
    heads = {h: HeadParams(np.zeros(d), np.zeros(k), np.zeros((k, d))) for h in HEADS}
    feature = DESIGN_FEATURES.index
    # Per offer in the last 7 days, in the observation's units (offers_last_7d / its scale).
    per_offer = _FEATURE["offers_last_7d"][2]

    head = heads["open"]
    weight, reference = rules.responsiveness_weight, rules.responsiveness_reference
    for c in catalog.channels:
        head.gamma[attrs.index(f"channel:{c}")] = _logit(rules.open_rate[c]) - weight * reference
        head.D[attrs.index(f"channel:{c}"), feature(f"{c}_responsiveness")] = weight
    head.w[feature("offers_last_7d")] = -rules.fatigue_per_offer * per_offer

    for c in catalog.channels:
        heads["click"].gamma[attrs.index(f"channel:{c}")] = _logit(rules.click_rate[c])
    for t in catalog.offer_types:
        prior = rules.offer_types[t]
        row = attrs.index(f"type:{t}" if prior.value_effect == "none" else f"value:{t}")
        heads["click"].D[row, feature(prior.preference)] += prior.click_uplift
        heads["convert"].gamma[attrs.index(f"type:{t}")] = _logit(rules.convert_rate)
        heads["convert"].D[row, feature(prior.preference)] += prior.convert_uplift

    head = heads["unsubscribe"]
    for c in catalog.channels:
        head.gamma[attrs.index(f"channel:{c}")] = _logit(rules.unsubscribe_rate[c])
    head.w[feature("offers_last_7d")] = rules.unsubscribe_fatigue_per_offer * per_offer

    for h, p in heads.items():
        mw, mg, md = _masks(attrs, h, preference_features(rules))
        if np.any(p.w * (1 - mw)) or np.any(p.gamma * (1 - mg)) or np.any(p.D * (1 - md)):
            raise AssertionError(f"prior of head {h!r} sets a coefficient the head does not have")
    return heads


# --- the model --------------------------------------------------------------------------------------


class Outcomes(NamedTuple):
    """Everything about sending action a to user x (arrays of shape (n,))."""

    open: np.ndarray
    """P(open)."""
    click: np.ndarray
    """P(click | open)."""
    convert: np.ndarray
    """P(convert | click)."""
    unsubscribe: np.ndarray
    """P(unsubscribe | open)."""
    order_value: np.ndarray
    """E[order list value | convert]."""
    net_conversion: np.ndarray
    """Value of a conversion: margin on the order minus the offer's cost."""
    contact_cost: np.ndarray
    """Cost of the message."""
    value_if_sent: np.ndarray
    """Expected net value of sending it (ignoring whether the channel may be used)."""


class ResponseModel:
    """Stage probabilities and expected rewards of offers, from fitted or prior coefficients."""

    def __init__(
        self,
        catalog: Catalog,
        rules: RewardRules,
        params: dict[str, HeadParams],
        fit_report: dict[str, Any] | None = None,
        design_features: tuple[str, ...] = DESIGN_FEATURES,
        feature_set: str | None = None,
    ) -> None:
        missing = [h for h in HEADS if h not in params]
        if missing:
            raise ConfigError(f"response model: no coefficients for heads {missing}")
        unknown = [f for f in design_features if f not in FEATURE_NAMES]
        if unknown:
            raise ConfigError(f"response model: it reads features this version does not build: {unknown}")
        self.design_features = tuple(design_features)
        """The observation columns its heads read: today's `DESIGN_FEATURES`, or an earlier set's."""
        self._design_idx = np.array([FEATURE_NAMES.index(f) for f in self.design_features], dtype=np.int64)
        self._fingerprint = feature_set or feature_fingerprint()
        self.catalog = catalog
        self.rules = rules
        self.params = params
        self.fit_report: dict[str, Any] = fit_report or {}
        self._attrs = _Attributes.of(catalog)
        a = _catalog_attribute_rows(catalog, rules, self._attrs)
        actions = catalog.actions
        # Per action: the constant part (U) and the feature weights (V) of every head's logit.
        self._U = np.stack([a @ params[h].gamma for h in HEADS], axis=1)  # (n_actions, H)
        self._V = np.stack([params[h].w + a @ params[h].D for h in HEADS], axis=1)  # (n_actions, H, d)
        self.action_channel = catalog.channel_index()
        """Per action: its channel as an index into ("email", "sms", "push"); -1 for the rest."""
        self.is_rest = catalog.is_rest(np.arange(catalog.n_actions))
        """Per action: it is the rest (nothing sent: every stage probability and the value are 0)."""
        offers = [x for x in actions if not x.is_rest]
        pad = [0.0] * int(self.is_rest.sum())
        # the rest reads the email consent column: its value is 0 whatever the flag says
        self._consent_col = np.array([_CONSENT_IDX[x.channel] for x in offers] + [_CONSENT_IDX["email"]] * len(pad))
        cost = [rules.offer_cost[x.offer_type] for x in offers]
        self._percent = np.array(
            [x.value / 100 if c.rule == "percent_of_order" else 0.0 for x, c in zip(offers, cost, strict=True)] + pad
        )
        self._fee = np.array([c.fee if c.rule == "fee_on_conversion" else 0.0 for c in cost] + pad)
        self._contact = np.array([rules.contact_cost[x.channel] for x in offers] + pad)
        self.action_percent_off = self._percent
        """Per action: the share of the order's list value the customer does not pay (0 if none)."""

    @property
    def n_actions(self) -> int:
        return self.catalog.n_actions

    # --- prediction ---------------------------------------------------------------------------

    def evaluate(self, obs: np.ndarray, action_ids: np.ndarray) -> Outcomes:
        """Every stage, the order value and the expected value of sending `action_ids[i]` to `obs[i]`."""
        obs = self._check_obs(obs)
        return self.evaluate_unchecked(obs, self._check_actions(action_ids, len(obs)))

    def evaluate_unchecked(self, obs: np.ndarray, a: np.ndarray) -> Outcomes:
        """`evaluate` without input checks: obs float64 (n, N_FEATURES), a valid int (n,). The
        environment's inner loop calls this."""
        x = obs[:, self._design_idx]
        logits = np.take(self._U, a, axis=0) + np.einsum("nhd,nd->nh", np.take(self._V, a, axis=0), x)
        return self._outcomes(obs, logits, a)

    def _outcomes(self, obs: np.ndarray, logits: np.ndarray, a: np.ndarray) -> Outcomes:
        """Outcomes from the heads' logits (..., H) for actions a of the same leading shape."""
        p = _sigmoid(logits[..., :4])
        p_open, p_click, p_convert, p_unsub = p[..., 0], p[..., 1], p[..., 2], p[..., 3]
        if self.catalog.rest_action:  # the rest sends nothing: nothing opens, its value is exactly 0
            p_open = np.where(self.is_rest[a], 0.0, p_open)
        basket = basket_value(obs, self.rules.default_order_value)
        basket = basket.reshape(basket.shape + (1,) * (logits.ndim - 2))
        order_value = basket * np.exp(np.clip(logits[..., 4], -_LOGIT_CLIP, 5.0))
        net = order_value * (self.rules.margin_rate - self._percent[a]) - self._fee[a]
        contact = self._contact[a]
        value = p_open * p_click * p_convert * net - contact - self.rules.unsubscribe_penalty * p_open * p_unsub
        return Outcomes(p_open, p_click, p_convert, p_unsub, order_value, net, contact, value)

    def stage_probabilities(self, obs: np.ndarray, action_ids: np.ndarray) -> dict[str, np.ndarray]:
        """P(open), P(click | open), P(convert | click), P(unsubscribe | open), and their product
        P(convert) (`converted`), plus E[order value | convert] (`order_value`); each (n,)."""
        o = self.evaluate(obs, action_ids)
        return {
            "open": o.open,
            "click": o.click,
            "convert": o.convert,
            "unsubscribe": o.unsubscribe,
            "converted": o.open * o.click * o.convert,
            "order_value": o.order_value,
        }

    def expected_reward(self, obs: np.ndarray, action_ids: np.ndarray) -> np.ndarray:
        """Expected net value (n,) of each action; 0 where the user's consent flag for its channel is 0."""
        obs = self._check_obs(obs)
        a = self._check_actions(action_ids, len(obs))
        value = self.evaluate(obs, a).value_if_sent
        return np.where(obs[np.arange(len(obs)), self._consent_col[a]] >= 0.5, value, 0.0)

    def reward_matrix(self, obs: np.ndarray, *, chunk: int = 16_384) -> np.ndarray:
        """Expected reward (n, n_actions) of every action for every user (consent respected)."""
        obs = self._check_obs(obs)
        out = np.empty((len(obs), self.n_actions))
        a = np.arange(self.n_actions)
        for lo in range(0, len(obs), chunk):
            part = obs[lo : lo + chunk]
            x = part[:, self._design_idx]
            logits = self._U[None, :, :] + np.einsum("nd,ahd->nah", x, self._V, optimize=True)
            value = self._outcomes(part, logits, a[None, :]).value_if_sent
            out[lo : lo + chunk] = np.where(part[:, self._consent_col] >= 0.5, value, 0.0)
        return out

    def channel_allowed(self, obs: np.ndarray) -> np.ndarray:
        """bool (n, n_actions): the user's consent flag for the action's channel is set."""
        obs = self._check_obs(obs)
        return (obs[:, self._consent_col] >= 0.5) | self.is_rest

    def with_rules(self, rules: RewardRules) -> ResponseModel:
        """The same fitted probabilities priced with other reward rules (costs, margin, penalty)."""
        params = {h: p.copy() for h, p in self.params.items()}
        return ResponseModel(self.catalog, rules, params, self.fit_report, self.design_features, self._fingerprint)

    def _check_obs(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        if obs.ndim == 1:
            obs = obs[None, :]
        if obs.ndim != 2 or obs.shape[1] != N_FEATURES:
            raise ValueError(f"observations must have shape (n, {N_FEATURES}), got {obs.shape}")
        return obs

    def _check_actions(self, action_ids: np.ndarray, n: int) -> np.ndarray:
        a = np.broadcast_to(np.asarray(action_ids), (n,))
        if a.dtype.kind not in "iu":
            raise ValueError(f"action ids must be integers, got dtype {a.dtype}")
        if n and (a.min() < 0 or a.max() >= self.n_actions):
            raise ValueError(f"action ids must be in [0, {self.n_actions}), got {a.min()}..{a.max()}")
        return a

    # --- storage ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: catalog, reward rules, coefficients by name, fit report."""
        c = self.catalog
        return {
            "format": FORMAT,
            "feature_fingerprint": self._fingerprint,
            "design_features": list(self.design_features),
            "attributes": list(self._attrs.names),
            "catalog": {"fingerprint": c.fingerprint(), **c.to_dict()},
            "rules": self.rules.to_dict(),
            "heads": {
                h: {"w": p.w.tolist(), "gamma": p.gamma.tolist(), "D": p.D.tolist()} for h, p in self.params.items()
            },
            "fit_report": self.fit_report,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], catalog: Catalog | None = None) -> ResponseModel:
        """Rebuild a model from `to_dict`; with `catalog`, refuse a model made for another catalog."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ConfigError(f"response model: expected format {FORMAT!r}, got {got!r}")
        design = _design_features_of(d)
        try:
            cd = d["catalog"]
            stored = Catalog.from_dict(cd)
            if stored.fingerprint() != cd["fingerprint"]:
                raise ConfigError("response model: the stored catalog does not match its fingerprint")
            if catalog is not None and catalog.without_rest().fingerprint() != stored.without_rest().fingerprint():
                raise ConfigError(
                    "response model: it was made for another catalog (action ids differ); refit it for this catalog"
                )
            if catalog is not None:  # the same offers; the rest (on or off) needs no coefficients
                stored = catalog
            rules = RewardRules.from_dict(d["rules"])
            attrs = _Attributes.of(stored)
            rows = _stored_attribute_rows(attrs, d["attributes"])
            k, nd = len(rows), len(design)
            params = {}
            for h in HEADS:
                hp = d["heads"][h]
                p = HeadParams(
                    np.asarray(hp["w"], dtype=np.float64),
                    np.zeros(len(attrs.names)),
                    np.zeros((len(attrs.names), nd)),
                )
                gamma = np.asarray(hp["gamma"], dtype=np.float64)
                p.D[rows] = np.asarray(hp["D"], dtype=np.float64).reshape(k, nd)
                if p.w.shape != (nd,) or gamma.shape != (k,):
                    raise ConfigError(f"response model: head {h!r} has malformed coefficients")
                p.gamma[rows] = gamma
                if not all(np.isfinite(v).all() for v in (p.w, p.gamma, p.D)):
                    raise ConfigError(f"response model: head {h!r} has malformed coefficients")
                params[h] = p
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"response model: malformed stored model ({e})") from e
        return cls(stored, rules, params, d.get("fit_report") or {}, design, d["feature_fingerprint"])


def _stored_attribute_rows(attrs: _Attributes, stored: list[str]) -> np.ndarray:
    """Where a stored model's attributes sit among today's (`attrs`): all of them, or all but the
    groups added since (`ADDED_ATTRIBUTE_GROUPS`), whose coefficients such a model leaves at 0."""
    if list(attrs.names) == stored:
        return np.arange(len(stored))
    earlier = [i for i, g in enumerate(attrs.groups) if g not in ADDED_ATTRIBUTE_GROUPS]
    if [attrs.names[i] for i in earlier] != stored:
        raise ConfigError("response model: stored attribute names do not match its catalog")
    return np.array(earlier, dtype=np.int64)


def _design_features_of(d: dict[str, Any]) -> tuple[str, ...]:
    """The design features of a stored model: today's, or those of an earlier feature set (its
    fingerprint known to `feature_columns`, every design feature a column of that set)."""
    fingerprint, design = d.get("feature_fingerprint"), d.get("design_features")
    if not isinstance(fingerprint, str) or not isinstance(design, list):
        raise ConfigError("response model: it records no feature set")
    try:
        columns = feature_columns(fingerprint)
    except RecsysError as e:
        raise ConfigError(f"response model: it was fitted on another observation definition ({e})") from e
    names = FEATURE_NAMES if columns is None else tuple(FEATURE_NAMES[j] for j in columns)
    if (columns is None and design != list(DESIGN_FEATURES)) or not set(design) <= set(names):
        raise ConfigError("response model: its design features do not match its feature set")
    return tuple(design)


def prior_response_model(catalog: Catalog, rules: RewardRules) -> ResponseModel:
    """The response model of the config's business-rule priors (no logs needed)."""
    check_rules_cover(catalog, rules)
    attrs = _Attributes.of(catalog)
    return ResponseModel(catalog, rules, _prior_params(catalog, rules, attrs), {"kind": "prior"})


def check_rules_cover(catalog: Catalog, rules: RewardRules) -> None:
    for name, table, needed in (
        ("contact_cost", rules.contact_cost, catalog.channels),
        ("prior.open_rate", rules.open_rate, catalog.channels),
        ("prior.click_rate", rules.click_rate, catalog.channels),
        ("prior.unsubscribe_rate", rules.unsubscribe_rate, catalog.channels),
        ("offer_cost", rules.offer_cost, catalog.offer_types),
        ("prior.offer_types", rules.offer_types, catalog.offer_types),
    ):
        missing = [k for k in needed if k not in table]
        if missing:
            raise ConfigError(f"[reward.{name}] has no entry for {missing}, which the catalog uses")


__all__ = [
    "DESIGN_FEATURES",
    "HEADS",
    "HeadParams",
    "Outcomes",
    "ResponseModel",
    "basket_value",
    "check_rules_cover",
    "prior_response_model",
    "raw_feature",
]
