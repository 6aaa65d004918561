"""The offer catalog: which offers exist, derived from the configuration file.

An action is one offer: (offer type, value, channel, timing). The list of actions is the
cartesian product of the configured lists, in that nested order, so `action_id` is stable for a
given configuration and changes (with the catalog fingerprint) whenever the lists change.
Used by the generator, the environment, scoring and the message templates.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from recsys.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"

ALLOWED_CHANNELS = ("email", "sms", "push")
ALLOWED_OFFER_TYPES = ("discount", "free_shipping", "recommendation", "bundle")
ALLOWED_TIMINGS = ("immediate", "delay_1hour", "delay_6hours")


@dataclass(frozen=True)
class Action:
    """One offer the policy can choose."""

    action_id: int
    offer_type: str
    value: float
    channel: str
    timing: str

    def describe(self, unit: str) -> str:
        """A one-line human description, as in the original sample output."""
        delivery = {"immediate": "immediate", "delay_1hour": "1-hour delay", "delay_6hours": "6-hour delay"}[
            self.timing
        ]
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

    @property
    def actions(self) -> list[Action]:
        combos = itertools.product(self.offer_types, self.values, self.channels, self.timings)
        return [Action(i, t, v, c, m) for i, (t, v, c, m) in enumerate(combos)]

    @property
    def n_actions(self) -> int:
        return len(self.offer_types) * len(self.values) * len(self.channels) * len(self.timings)

    def fingerprint(self) -> str:
        """sha256 of the action list: equal fingerprints mean identical action ids."""
        payload = json.dumps(
            [[a.offer_type, a.value, a.channel, a.timing] for a in self.actions],
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()


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
    missing_delays = [t for t in timings if t not in delays]
    if missing_delays:
        raise ConfigError(f"{source}: [catalog.timing_delay_minutes] has no delay for {missing_delays}")
    category_types = tuple(section.get("category_offers", {}).get("types", []))
    return Catalog(
        offer_types=tuple(offer_types),
        values=tuple(float(v) for v in values),
        channels=tuple(channels),
        timings=tuple(timings),
        value_units=units,
        category_offer_types=category_types,
        timing_delay_minutes=delays,
    )
