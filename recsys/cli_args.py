"""Argument types of the command line (`recsys.cli`): dates, timestamps, counts and shards, each
refused with a message argparse prints next to the option."""

from __future__ import annotations

import argparse
import datetime as dt


def date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from e


def timestamp(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 timestamp, got {text!r}") from e
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from e
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
    return value


def positive(text: str) -> int:
    return whole_number(text, 1)


def non_negative(text: str) -> int:
    return whole_number(text, 0)


def shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a shard as K/N (e.g. 0/4), got {text!r}") from e
    if n < 1 or not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"shard {text!r}: K must be in 0..N-1 and N >= 1")
    return k, n
