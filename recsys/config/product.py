"""The product configuration as one object: the offer catalog, the reward rules, the campaign
rules, and how the system learns and gates its models, read once from one file and handed down.

The caller loads it (`load_config(settings.config)`: the CLI, each Airflow task, a benchmark) and
passes it to every stage; no stage reads the file or the environment itself. A variant for an
experiment is a `dataclasses.replace` of it (`with_rules`), never an edited copy of the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from recsys.config.catalog import Catalog, parse_catalog, read_config_file
from recsys.config.learning import FitConfig, GateConfig, parse_section
from recsys.config.reward import RewardRules, parse_reward
from recsys.config.rules import CampaignRules, parse_rules


@dataclass(frozen=True)
class Config:
    """What the shop configures: which offers exist, what they are worth, and the campaign rules."""

    catalog: Catalog
    reward: RewardRules
    rules: CampaignRules
    source: Path
    """The file it was read from."""
    learning: FitConfig = field(default_factory=FitConfig)
    """`[learning]`: the response model's fit (priors' strength, the bounded sample of the logs)."""
    gate: GateConfig = field(default_factory=GateConfig)
    """`[gate]`: what a challenger must show to become champion."""

    def with_rules(self, **changes: Any) -> Config:
        """This configuration with some campaign rules changed (e.g. `cap_total=7`)."""
        return replace(self, rules=replace(self.rules, **changes))


def load_config(path: Path | None = None) -> Config:
    """Read and check the configuration file `path` (default: the packaged `recsys/config.toml`;
    operators point `RECSYS_CONFIG`, i.e. `Settings.config`, at their own). A bad value raises
    ConfigError naming the file and the key."""
    data, source = read_config_file(path)
    catalog = parse_catalog(data, source)
    return Config(
        catalog=catalog,
        reward=parse_reward(data, source, catalog),
        rules=parse_rules(data, source),
        source=source,
        learning=parse_section(FitConfig, data, "learning", source),
        gate=parse_section(GateConfig, data, "gate", source),
    )
