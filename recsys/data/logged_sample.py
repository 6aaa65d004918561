"""How the logged-offer reads are sized and run: `probe_window` counts a small uniform sample of a
window's decisions, so that a database sample read by `recsys.data.logged_offers.load_logged_offers`
(the response model's fit, off-policy evaluation) holds enough decisions the reader can use in one
read; `query_settings` sets the planner for those reads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Literal

import psycopg2.extensions

from recsys.config.settings import package_dir
from recsys.db import Connection
from recsys.db.sqlfiles import load_sql

__all__ = ["WindowProbe", "probe_window", "query_settings"]

# One wide join over every feature partition of the window: JIT compilation costs seconds and wins
# nothing back; the sorts want memory. Set for the reads only. Without merge joins the planner looks
# up each decision's feature row by its key instead of reading every feature row of the window in
# key order: a sampled read of 300,632 of 1,005,038 decisions (300k users, 28 days) took 9.3 s
# instead of 14.2 s, a full read 25.4 s instead of 26.5 s (docs/performance.md).
QUERY_SETTINGS = {"jit": "off", "work_mem": "256MB", "enable_mergejoin": "off"}


@contextmanager
def query_settings(cur: psycopg2.extensions.cursor) -> Iterator[None]:
    """`QUERY_SETTINGS` for the statements inside, the session's own back after them."""
    cur.execute("select " + ", ".join("current_setting(%s)" for _ in QUERY_SETTINGS), tuple(QUERY_SETTINGS))
    saved = dict(zip(QUERY_SETTINGS, cur.fetchone(), strict=True))
    for name, value in QUERY_SETTINGS.items():
        cur.execute("select set_config(%s, %s, true)", (name, value))
    yield
    for name, value in saved.items():
        cur.execute("select set_config(%s, %s, true)", (name, value))


_PROBE_DECISIONS = 20_000
"""About how many decisions `probe_window` counts: a share near one half is then known to within
about 1.4% (two standard errors), well inside the readers' margins."""


@dataclass(frozen=True)
class WindowProbe:
    """What a uniform sample of a window's decisions says of them (`probe_window`): per part
    (`recent`: decided on `recent_from` or later; `older`), how many it counted, how many have the
    features of their day (`with_features`: the response model's fit can use them) and how many
    also a known propensity (`usable`: off-policy evaluation can)."""

    counts: dict[tuple[bool, str], int]

    def share(self, column: Literal["with_features", "usable"], part: Literal["recent", "older", "all"] = "all") -> float:
        """The estimated share of the part's decisions that have `column`, in (0, 1]: with one
        decision added to both counts, so that a small probe never says none (1 when it counted
        none)."""
        recent = {"recent": (True,), "older": (False,), "all": (True, False)}[part]
        counted = sum(self.counts.get((r, "decisions"), 0) for r in recent)
        having = sum(self.counts.get((r, column), 0) for r in recent)
        return (having + 1) / (counted + 1)


def probe_window(
    conn: Connection,
    *,
    upper: int,
    sent_from: dt.datetime | None = None,
    sent_before: dt.datetime | None = None,
    decided_from: date | None = None,
    decided_before: date | None = None,
    rests: bool = False,
    seed: int = 0,
    recent_from: date | None = None,
) -> WindowProbe:
    """Count a uniform sample of about `_PROBE_DECISIONS` of a window's decisions (`upper`: an
    upper bound of how many it holds), drawn by the hash `load_logged_offers` samples with, at the
    same `seed` (sql/logged_offers/usable_share.sql). The database samples of the readers are sized
    with its shares, so that one read holds enough decisions they can use."""
    params = {
        "sent_from": sent_from,
        "sent_before": sent_before,
        "decided_from": decided_from,
        "decided_before": decided_before,
        "with_rests": rests,
        "sample_seed": int(seed),
        "probe_rate": min(1.0, _PROBE_DECISIONS / max(upper, 1)),
        "recent_from": recent_from,
    }
    with conn.cursor() as cur, query_settings(cur):
        cur.execute(load_sql(package_dir("sql"), "logged_offers/usable_share"), params)
        rows = cur.fetchall()
    counts = {
        (bool(is_recent), column): int(value)
        for is_recent, *values in rows
        for column, value in zip(("decisions", "with_features", "usable"), values, strict=True)
    }
    return WindowProbe(counts)
