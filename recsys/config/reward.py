"""Reward rules: the `[reward]` section of the configuration file, parsed and checked.

What an offer is worth (margin, offer costs, contact costs, the unsubscribe penalty) and the
business-rule priors of how users respond when there are no logged offers to learn from. The file
is the same one `recsys.config.catalog.load_catalog` reads, so a user adapts the catalog, its costs and
the reward's rules by editing one file. Every number is documented in the file's comments.

Used by `recsys.model.response` (the prior model and the reward of a response model) and, through it, by
the environment, training and evaluation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recsys.config.catalog import ALLOWED_CHANNELS, ALLOWED_OFFER_TYPES, Catalog, parse_catalog, read_config_file
from recsys.config.features import PREFERENCE_FEATURES
from recsys.errors import ConfigError

COST_RULES = ("percent_of_order", "fee_on_conversion", "none")
"""How an offer type costs the shop on a conversion (see the config file)."""

VALUE_EFFECTS = ("proportional", "decay", "none")
"""How an offer's value scales its appeal: value / reference, exp(-value / reference), or not at all."""


@dataclass(frozen=True)
class OfferCost:
    """What one offer type costs the shop when the order converts."""

    rule: str
    """percent_of_order, fee_on_conversion or none."""
    fee: float = 0.0
    """The fee per converted order (fee_on_conversion only)."""


@dataclass(frozen=True)
class OfferTypePrior:
    """The prior appeal of one offer type: which feature says a user likes it, and how much."""

    preference: str
    """Observation feature whose value raises the appeal (e.g. discount_sensitivity)."""
    value_effect: str
    """proportional, decay or none: how the offer's value scales the uplift."""
    value_reference: float
    """Value at which `proportional` gives 1 (and the scale of `decay`)."""
    click_uplift: float
    """Log-odds of P(click | open) per unit of the preference feature, times the value effect."""
    convert_uplift: float
    """Log-odds of P(convert | click) per unit of the preference feature, times the value effect."""

    def value_scale(self, value: float) -> float:
        """The value effect of an offer of `value`: the factor the uplifts are multiplied by."""
        if self.value_effect == "proportional":
            return value / self.value_reference
        if self.value_effect == "decay":
            return math.exp(-value / self.value_reference)
        return 1.0


@dataclass(frozen=True)
class RewardRules:
    """The reward's business rules and the response priors, from the `[reward]` config section."""

    margin_rate: float
    """Gross margin on an order's list value."""
    unsubscribe_penalty: float
    """Value lost per unsubscribe."""
    default_order_value: float
    """Expected order value of a user without a purchase in the feature window."""
    contact_cost: dict[str, float]
    """Cost of one message, per channel."""
    offer_cost: dict[str, OfferCost]
    """Cost on conversion, per offer type."""
    open_rate: dict[str, float]
    """Prior P(open) at the reference responsiveness and no recent offers, per channel."""
    click_rate: dict[str, float]
    """Prior P(click | open) of an offer with no particular appeal, per channel."""
    unsubscribe_rate: dict[str, float]
    """Prior P(unsubscribe | open) with no recent offers, per channel."""
    convert_rate: float
    """Prior P(convert | click) of an offer with no particular appeal."""
    responsiveness_weight: float
    """Log-odds of opening per unit of the channel's responsiveness above the reference."""
    responsiveness_reference: float
    """Responsiveness of a user with no history."""
    fatigue_per_offer: float
    """Log-odds of opening lost per offer in the last 7 days."""
    unsubscribe_fatigue_per_offer: float
    """Log-odds of unsubscribing gained per offer in the last 7 days."""
    offer_types: dict[str, OfferTypePrior]
    """Prior appeal per offer type."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (stored with every response model)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RewardRules:
        """Inverse of `to_dict`, checked like the config file."""
        return _parse(_from_plain(d), "stored reward rules", catalog_types=None, catalog_channels=None)


def load_reward_rules(path: Path | None = None) -> RewardRules:
    """The reward rules of the configuration file `path` (default: the packaged one)."""
    data, source = read_config_file(path)
    return parse_reward(data, source, parse_catalog(data, source))


def parse_reward(data: dict, source: Path, catalog: Catalog) -> RewardRules:
    """The `[reward]` section of a parsed configuration file, checked against the same file's
    catalog: every offer type and channel of `catalog` needs its costs and priors, so a catalog edit
    that forgets the reward fails here with a message naming the key."""
    section = data.get("reward")
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: missing [reward] section")
    return _parse(section, str(source), catalog_types=catalog.offer_types, catalog_channels=catalog.channels)


# --- parsing ------------------------------------------------------------------------------------


def _from_plain(d: dict[str, Any]) -> dict[str, Any]:
    """The nested TOML layout from the flat `to_dict` layout."""
    try:
        return {
            "margin_rate": d["margin_rate"],
            "unsubscribe_penalty": d["unsubscribe_penalty"],
            "default_order_value": d["default_order_value"],
            "contact_cost": d["contact_cost"],
            "offer_cost": {
                t: {k: v for k, v in c.items() if k != "fee" or c.get("rule") == "fee_on_conversion"}
                for t, c in d["offer_cost"].items()
            },
            "prior": {
                "open_rate": d["open_rate"],
                "click_rate": d["click_rate"],
                "unsubscribe_rate": d["unsubscribe_rate"],
                "convert_rate": d["convert_rate"],
                "responsiveness_weight": d["responsiveness_weight"],
                "responsiveness_reference": d["responsiveness_reference"],
                "fatigue_per_offer": d["fatigue_per_offer"],
                "unsubscribe_fatigue_per_offer": d["unsubscribe_fatigue_per_offer"],
                "offer_types": d["offer_types"],
            },
        }
    except (KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"stored reward rules: missing or malformed entry {e}") from e


class _Reader:
    """Typed access to one table of the config, with messages that name the file and the key."""

    def __init__(self, table: Any, where: str) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table, got {table!r}")
        self.table = table
        self.where = where
        self.used: set[str] = set()

    def number(self, key: str, *, low: float | None = None, high: float | None = None, open_low: bool = False) -> float:
        self.used.add(key)
        if key not in self.table:
            raise ConfigError(f"{self.where}: missing {key}")
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{self.where}: {key} must be a number, got {value!r}")
        value = float(value)
        if low is not None and (value < low or (open_low and value == low)):
            raise ConfigError(f"{self.where}: {key} must be {'>' if open_low else '>='} {low:g}, got {value:g}")
        if high is not None and value > high:
            raise ConfigError(f"{self.where}: {key} must be <= {high:g}, got {value:g}")
        return value

    def rate(self, key: str) -> float:
        value = self.number(key)
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{self.where}: {key} must be a probability strictly between 0 and 1, got {value:g}")
        return value

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        self.used.add(key)
        value = self.table.get(key)
        if value not in allowed:
            raise ConfigError(f"{self.where}: {key} must be one of {list(allowed)}, got {value!r}")
        return value

    def sub(self, key: str) -> _Reader:
        self.used.add(key)
        if key not in self.table:
            raise ConfigError(f"{self.where}: missing [{key}] table")
        return _Reader(self.table[key], f"{self.where}.{key}")

    def keyed(self, allowed: tuple[str, ...], needed: tuple[str, ...] | None) -> list[str]:
        """Keys of a per-channel or per-offer-type table: known names, and every needed one present."""
        unknown = [k for k in self.table if k not in allowed]
        if unknown:
            raise ConfigError(f"{self.where}: unknown entries {unknown}; allowed: {list(allowed)}")
        missing = [k for k in (needed or ()) if k not in self.table]
        if missing:
            raise ConfigError(f"{self.where}: no entry for {missing} (listed in [catalog])")
        self.used.update(self.table)
        return list(self.table)

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise ConfigError(f"{self.where}: unknown keys {unknown}")


def _parse(
    section: dict[str, Any],
    source: str,
    *,
    catalog_types: tuple[str, ...] | None,
    catalog_channels: tuple[str, ...] | None,
) -> RewardRules:
    top = _Reader(section, f"{source}: [reward]")
    margin_rate = top.number("margin_rate", low=0.0, high=1.0, open_low=True)
    penalty = top.number("unsubscribe_penalty", low=0.0)
    default_order_value = top.number("default_order_value", low=0.0, open_low=True)

    costs = top.sub("contact_cost")
    contact_cost = {c: costs.number(c, low=0.0) for c in costs.keyed(ALLOWED_CHANNELS, catalog_channels)}

    offer_costs = top.sub("offer_cost")
    offer_cost = {}
    for t in offer_costs.keyed(ALLOWED_OFFER_TYPES, catalog_types):
        entry = offer_costs.sub(t)
        rule = entry.choice("rule", COST_RULES)
        fee = entry.number("fee", low=0.0) if rule == "fee_on_conversion" else 0.0
        entry.done()
        offer_cost[t] = OfferCost(rule=rule, fee=fee)

    prior = top.sub("prior")
    rates = {}
    for name in ("open_rate", "click_rate", "unsubscribe_rate"):
        table = prior.sub(name)
        rates[name] = {c: table.rate(c) for c in table.keyed(ALLOWED_CHANNELS, catalog_channels)}
    types = prior.sub("offer_types")
    offer_types = {}
    for t in types.keyed(ALLOWED_OFFER_TYPES, catalog_types):
        entry = types.sub(t)
        offer_types[t] = OfferTypePrior(
            preference=entry.choice("preference", PREFERENCE_FEATURES),
            value_effect=entry.choice("value_effect", VALUE_EFFECTS),
            value_reference=entry.number("value_reference", low=0.0, open_low=True),
            click_uplift=entry.number("click_uplift"),
            convert_uplift=entry.number("convert_uplift"),
        )
        entry.done()
    rules = RewardRules(
        margin_rate=margin_rate,
        unsubscribe_penalty=penalty,
        default_order_value=default_order_value,
        contact_cost=contact_cost,
        offer_cost=offer_cost,
        open_rate=rates["open_rate"],
        click_rate=rates["click_rate"],
        unsubscribe_rate=rates["unsubscribe_rate"],
        convert_rate=prior.rate("convert_rate"),
        responsiveness_weight=prior.number("responsiveness_weight"),
        responsiveness_reference=prior.number("responsiveness_reference", low=0.0, high=1.0),
        fatigue_per_offer=prior.number("fatigue_per_offer"),
        unsubscribe_fatigue_per_offer=prior.number("unsubscribe_fatigue_per_offer"),
        offer_types=offer_types,
    )
    prior.done()
    top.done()
    return rules
