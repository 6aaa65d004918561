"""The offer catalog: which offers exist, derived from the configuration file.

An action is one offer: (offer type, value, channel, timing). The list of actions is the
cartesian product of the configured lists, in that nested order, so `action_id` is stable for a
given configuration and changes (with the catalog fingerprint) whenever the lists change.
With `rest_action = true` (the default) one more action follows the offers: `no_offer`, the rest
(no message tonight: no contact cost, no fatigue, no unsubscribe risk, reward 0). It is always the
last action, so the offers keep their ids whether rest is on or off, and the fingerprint of a
catalog without rest is the one it always had.

A model trained on one catalog scores on any catalog that contains it: `action_mapping` matches
actions by (offer type, value, channel, timing), the rest as the rest.
Used by the generator, the environment, scoring and the message templates.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"

ALLOWED_CHANNELS = ("email", "sms", "push")
ALLOWED_OFFER_TYPES = ("discount", "free_shipping", "recommendation", "bundle")
ALLOWED_TIMINGS = ("immediate", "delay_1hour", "delay_6hours", "best_hour")
BEST_HOUR = "best_hour"
"""The timing that sends at the user's best local hour (learned from the features) instead of the
configured send time; off unless listed in `[catalog] timings` (the seed's 108 offers stay as they are)."""
REST = "no_offer"
"""offer_type of the rest action (its channel and timing are "none", its value 0)."""
REST_CHANNEL = "none"
REST_TIMING = "none"


@dataclass(frozen=True)
class Action:
    """One offer the policy can choose."""

    action_id: int
    offer_type: str
    value: float
    channel: str
    timing: str

    @property
    def is_rest(self) -> bool:
        """The rest: no offer tonight."""
        return self.offer_type == REST

    @property
    def key(self) -> tuple[str, float, str, str]:
        """What identifies the action across catalogs: (offer type, value, channel, timing)."""
        return (self.offer_type, float(self.value), self.channel, self.timing)

    def describe(self, unit: str) -> str:
        """A one-line human description, as in the original sample output."""
        if self.is_rest:
            return "no offer tonight (rest)"
        delivery = {
            "immediate": "immediate",
            "delay_1hour": "1-hour delay",
            "delay_6hours": "6-hour delay",
            BEST_HOUR: "at the user's best hour",
        }[self.timing]
        value = f"{self.value:g}"
        if unit == "percent_off":
            what = f"{value}% {self.offer_type.replace('_', ' ')}"
        elif unit == "percent_off_bundle":
            what = f"{value}% off a bundle"
        elif unit == "min_order_value":
            what = f"free shipping on orders over {value}"
        elif unit == "products_shown":
            what = f"recommendation of {value} products"
        else:
            what = f"{self.offer_type} {value}"
        return (
            f"{what} via {self.channel} ({delivery} delivery)"
            if self.timing == "immediate"
            else f"{what} via {self.channel} ({delivery})"
        )


@dataclass(frozen=True)
class Catalog:
    """The configured offer lists and the actions derived from them."""

    offer_types: tuple[str, ...]
    values: tuple[float, ...]
    channels: tuple[str, ...]
    timings: tuple[str, ...]
    value_units: dict[str, str] = field(default_factory=dict)
    category_offer_types: tuple[str, ...] = ()
    timing_delay_minutes: dict[str, int] = field(default_factory=dict)
    rest_action: bool = False
    """A `no_offer` action after the offers (the configuration file's default is on; a catalog
    stored before rest existed has none)."""

    @property
    def actions(self) -> list[Action]:
        combos = itertools.product(self.offer_types, self.values, self.channels, self.timings)
        offers = [Action(i, t, v, c, m) for i, (t, v, c, m) in enumerate(combos)]
        if self.rest_action:
            offers.append(Action(len(offers), REST, 0.0, REST_CHANNEL, REST_TIMING))
        return offers

    @property
    def n_offers(self) -> int:
        """The offers (every action but the rest): their ids are 0..n_offers - 1."""
        return len(self.offer_types) * len(self.values) * len(self.channels) * len(self.timings)

    @property
    def n_actions(self) -> int:
        return self.n_offers + int(self.rest_action)

    @property
    def rest_id(self) -> int | None:
        """The rest's action id (the last one), None when the catalog has no rest."""
        return self.n_offers if self.rest_action else None

    def is_rest(self, action_ids: np.ndarray) -> np.ndarray:
        """bool, per action id: it is the rest."""
        a = np.asarray(action_ids)
        return a == self.n_offers if self.rest_action else np.zeros(a.shape, dtype=bool)

    def without_rest(self) -> Catalog:
        """The same offers with no rest action."""
        return replace(self, rest_action=False)

    def channel_index(self) -> np.ndarray:
        """int (n_actions,): each action's channel as an index into ALLOWED_CHANNELS; -1 for the rest."""
        return np.array([-1 if a.is_rest else ALLOWED_CHANNELS.index(a.channel) for a in self.actions], dtype=np.int64)

    def action_mask(self, channel_ok: np.ndarray) -> np.ndarray:
        """bool (n, n_actions) from per-user usable channels (n, 3, ALLOWED_CHANNELS order): an offer
        is allowed where its channel is; the rest where some offer is (a user no rule lets us
        contact is skipped, never rested)."""
        ok = np.asarray(channel_ok, dtype=bool)
        columns = [ALLOWED_CHANNELS.index(c) for c in self._offer_channels()]
        if not self.rest_action:
            return ok[:, columns]
        # the rest's column appended to the channels' (some offer's channel is usable), then every
        # action's column picked at once: one pass over the (n, n_actions) mask, not three
        rest = ok[:, sorted(set(columns))].any(axis=1, keepdims=True)
        return np.concatenate([ok, rest], axis=1)[:, [*columns, ok.shape[1]]]

    def _offer_channels(self) -> list[str]:
        per_offer = len(self.timings)
        return [c for _ in self.offer_types for _ in self.values for c in self.channels for _ in range(per_offer)]

    def fingerprint(self) -> str:
        """sha256 of the action list: equal fingerprints mean identical action ids."""
        payload = json.dumps(
            [[a.offer_type, a.value, a.channel, a.timing] for a in self.actions],
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_dict(self) -> dict:
        """The lists and maps as JSON-ready values (what the response model and the truth store)."""
        return {
            "offer_types": list(self.offer_types),
            "values": list(self.values),
            "channels": list(self.channels),
            "timings": list(self.timings),
            "value_units": dict(self.value_units),
            "category_offer_types": list(self.category_offer_types),
            "timing_delay_minutes": dict(self.timing_delay_minutes),
            "rest_action": self.rest_action,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Catalog:
        """The catalog `to_dict` stored (other keys, such as a stored fingerprint, are ignored)."""
        return cls(
            offer_types=tuple(d["offer_types"]),
            values=tuple(float(v) for v in d["values"]),
            channels=tuple(d["channels"]),
            timings=tuple(d["timings"]),
            value_units=dict(d["value_units"]),
            category_offer_types=tuple(d["category_offer_types"]),
            timing_delay_minutes={k: int(v) for k, v in d["timing_delay_minutes"].items()},
            rest_action=bool(d.get("rest_action", False)),
        )


def action_mapping(trained: Iterable[Mapping[str, Any]], catalog: Catalog) -> np.ndarray:
    """int (n_trained,): the running catalog's action id of each action a model was trained on
    (its stored action list, `recsys.evaluation.registry.catalog_json`: dicts with offer_type,
    value, channel, timing, in the model's action order), matched by (offer type, value, channel,
    timing). Raises ValueError naming the actions the running catalog lacks."""
    index = {a.key: a.action_id for a in catalog.actions}
    keys = [(str(a["offer_type"]), float(a["value"]), str(a["channel"]), str(a["timing"])) for a in trained]
    missing = [k for k in keys if k not in index]
    if missing:
        shown = ", ".join("/".join(f"{x:g}" if isinstance(x, float) else x for x in k) for k in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(f"{len(missing)} of its {len(keys)} actions are not in the configured catalog: {shown}{more}")
    return np.array([index[k] for k in keys], dtype=np.int64)


def _require_list(section: dict, key: str, source: Path) -> list:
    value = section.get(key)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{source}: [catalog] {key} must be a non-empty list")
    if len(set(value)) != len(value):
        raise ConfigError(f"{source}: [catalog] {key} has repeated entries: {value}")
    return value


def read_config_file(path: Path | None = None) -> tuple[dict, Path]:
    """The parsed TOML of the configuration file `path` (default: the packaged `recsys/config.toml`)
    and the path it came from. The one reader of the file: `recsys.config.load_config` parses
    every section from what it returns."""
    source = Path(path or DEFAULT_CONFIG)
    try:
        return tomllib.loads(source.read_text(encoding="utf-8")), source
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {source}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from e


def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog of the configuration file `path` (default: the packaged one)."""
    return parse_catalog(*read_config_file(path))


def parse_catalog(data: dict, source: Path) -> Catalog:
    """The `[catalog]` section of a parsed configuration file, checked; errors name the key."""
    section = data.get("catalog")
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: missing [catalog] section")
    offer_types = _require_list(section, "offer_types", source)
    channels = _require_list(section, "channels", source)
    timings = _require_list(section, "timings", source)
    values = _require_list(section, "values", source)
    for name, got, allowed in (
        ("offer_types", offer_types, ALLOWED_OFFER_TYPES),
        ("channels", channels, ALLOWED_CHANNELS),
        ("timings", timings, ALLOWED_TIMINGS),
    ):
        unknown = [x for x in got if x not in allowed]
        if unknown:
            raise ConfigError(f"{source}: [catalog] {name} has unknown entries {unknown}; allowed: {list(allowed)}")
    if not all(isinstance(v, int | float) and v > 0 for v in values):
        raise ConfigError(f"{source}: [catalog] values must be positive numbers, got {values}")
    units = dict(section.get("value_units", {}))
    missing_units = [t for t in offer_types if t not in units]
    if missing_units:
        raise ConfigError(f"{source}: [catalog.value_units] has no unit for {missing_units}")
    delays = {k: int(v) for k, v in section.get("timing_delay_minutes", {}).items()}
    if BEST_HOUR in timings:
        delays.setdefault(BEST_HOUR, 0)  # after the best hour itself, nothing to wait for
    missing_delays = [t for t in timings if t not in delays]
    if missing_delays:
        raise ConfigError(f"{source}: [catalog.timing_delay_minutes] has no delay for {missing_delays}")
    category_types = tuple(section.get("category_offers", {}).get("types", []))
    rest = section.get("rest_action", True)
    if not isinstance(rest, bool):
        raise ConfigError(f"{source}: [catalog] rest_action must be true or false, got {rest!r}")
    return Catalog(
        offer_types=tuple(offer_types),
        values=tuple(float(v) for v in values),
        channels=tuple(channels),
        timings=tuple(timings),
        value_units=units,
        category_offer_types=category_types,
        timing_delay_minutes=delays,
        rest_action=rest,
    )
