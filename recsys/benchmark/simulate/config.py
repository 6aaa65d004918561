"""What a simulation runs (`SimulateConfig`), its constants and its clock."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.config.settings import PROJECT_ROOT

if TYPE_CHECKING:  # the cohort module imports this one
    from recsys.benchmark.simulate.cohort import ValueRange

SIM_DATABASE = "recsys_simulate"
SENDER_WORKER = "simulator"
Z95 = 1.96
DAY = 86_400
HOUR = 3_600

VALUE_ROWS = ("policy", "best_fixed", "random", "oracle", "control")
"""The per-night values, in the order of the table and the plot."""


@dataclass(frozen=True)
class SimulateConfig:
    """What to simulate. Defaults: one seed of the showcase in a few minutes on 2 cores."""

    nights: int = 7
    """Consecutive campaign dates to run."""
    users: int = 5_000
    """Users of the generated shop."""
    seed: int = 1
    """Seed of the shop, the simulated users and training."""
    start: dt.date | None = None
    """First campaign date (default: `nights` days before today, so every simulated night is past)."""
    out: Path = PROJECT_ROOT / "data" / "simulate"
    """Folder for the generated shop, the inbox, Airflow's metadata and the results."""
    timesteps: int = 200_000
    """PPO steps per night (a retrain, or a fine-tune of the champion): the nightly DAG's default, so
    the showcase measures the policy the shipped nightly run would learn. At 60,000 PPO reached only
    about 80% of its own response model's greedy value and stayed below the best fixed offer."""
    history_days: int = 60
    """Days of generated behaviour and past campaigns before the first night."""
    in_process: bool = False
    """Call the nightly stages directly instead of running the DAG through dag.test()."""
    shards: int = 1
    """Scoring shards per night."""
    database: str = SIM_DATABASE
    """Name of the simulation's own database (created, or replaced, on the configured server)."""
    frequency_cap: int | None = 7
    """Offers per user in 7 days for the simulated campaigns (None: the configuration's rule, 3 by
    default). 7 lets every active user get an offer every night, so each night is a full campaign to
    measure; with the shipped 3 in 7 days most users sit out nights 4 to 7."""

    value_first: int = 8
    value_last: int = 30
    """Nights (1-based, inclusive) of the valuation over a range on the fixed cohort, and of the bar's
    statistic; clipped to the run (a run shorter than `value_first` is valued over all its nights)."""

    def value_range(self) -> ValueRange:
        from recsys.benchmark.simulate.cohort import ValueRange

        return ValueRange(self.value_first, self.value_last)

    def first_night(self) -> dt.date:
        return self.start or dt.datetime.now(dt.UTC).date() - dt.timedelta(days=self.nights)


def midnight(day: dt.date) -> dt.datetime:
    """00:00 UTC of `day`."""
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def epoch(day: dt.date) -> int:
    """Seconds since 1970-01-01 at 00:00 UTC of `day`."""
    return (day - dt.date(1970, 1, 1)).days * DAY
