"""Calendar helpers of the synthetic data: UTC offsets per time zone and night, release times.

Times inside the generator are integer seconds since the Unix epoch (UTC). The offsets are looked up
once per (time zone, date) with `zoneinfo`, at local noon, so daylight-saving changes (which happen at
night) are applied from the day they take effect. `Window` is the data window of one generation.
Used by the generator's modules, `recsys.benchmark.synth.truth` and `recsys.benchmark.simulate`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

DAY = 86_400
HOUR = 3_600
_EPOCH = dt.date(1970, 1, 1)


def epoch_seconds(day: dt.date) -> int:
    """Seconds since the epoch of `day` 00:00 UTC."""
    return (day - _EPOCH).days * DAY


def utc_offsets(timezones: Sequence[str], first: dt.date, n_days: int) -> np.ndarray:
    """UTC offset in seconds, shape (len(timezones), n_days), of each zone on each date from `first`."""
    out = np.zeros((len(timezones), n_days), dtype=np.int64)
    for i, name in enumerate(timezones):
        zone = ZoneInfo(name)
        for j in range(n_days):
            day = first + dt.timedelta(days=j)
            local_noon = dt.datetime(day.year, day.month, day.day, 12, tzinfo=zone)
            offset = local_noon.utcoffset()
            out[i, j] = int(offset.total_seconds()) if offset is not None else 0
    return out


def release_seconds(
    offset: np.ndarray, night_start: int, release_hour_local: float, publish_hour_utc: float
) -> np.ndarray:
    """Release time of a night's offers: max(send time in local time, the run's publish time).

    `offset` holds the users' UTC offsets (seconds) on that night; `night_start` is the campaign date
    00:00 UTC in epoch seconds. East of UTC the local send time can fall before the run is published
    (09:00 in Sydney is 23:00 UTC the day before), and then the offer goes out at publish time.
    """
    local_send = night_start + round(release_hour_local * HOUR) - offset
    return np.maximum(local_send, night_start + round(publish_hour_utc * HOUR))


@dataclass(frozen=True)
class Window:
    """The data window: the `days` days before `end_date`, [start, end) in epoch seconds (UTC)."""

    start: int
    end: int
    days: int
    first_date: dt.date
    offsets: np.ndarray
    """UTC offset (seconds) per time zone and day of the window, shape (len(timezones), days)."""

    @classmethod
    def before(cls, end_date: dt.date, days: int, timezones: Sequence[str]) -> Window:
        end = epoch_seconds(end_date)
        first_date = end_date - dt.timedelta(days=days)
        offsets = utc_offsets(timezones, first_date, days)
        return cls(start=end - days * DAY, end=end, days=days, first_date=first_date, offsets=offsets)
