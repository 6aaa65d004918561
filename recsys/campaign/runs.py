"""Campaign run bookkeeping: run ids, shards, the run and shard rows, and the counts summed into them.

A run (campaign_runs) has shard rows (campaign_run_shards); `start_run` creates or joins the run and
marks a shard as scoring, `finish_shard` records a shard's counts and timings and sums every done
shard into the run, `mark_failed` records a failure. Called by `score_campaign`
(recsys.campaign.score).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from psycopg2.extras import Json

from recsys.campaign.queries import campaign_sql
from recsys.campaign.write import drop_empty_partition
from recsys.config.catalog import Catalog
from recsys.db import Connection
from recsys.errors import RecsysError

# the run's log lines keep the name they have always had
log = logging.getLogger("recsys.campaign.score")


def default_run_id(campaign_date: dt.date) -> str:
    return f"cli-{campaign_date.isoformat()}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%fZ')}"


def parse_shard(shard: int | None, shards: int) -> tuple[int, int]:
    if shards < 1:
        raise RecsysError(f"shards must be >= 1, got {shards}")
    k = 0 if shard is None else shard
    if not 0 <= k < shards:
        raise RecsysError(f"shard {k} is not in 0..{shards - 1}")
    return k, shards


def start_run(
    conn: Connection,
    sql_dir: Path,
    run_id: str,
    campaign_date: dt.date,
    model_version: str,
    shard: int,
    shards: int,
    dry_run: bool,
    rules_json: dict[str, Any],
) -> None:
    """Create (or join) the run and mark this shard as scoring; committed at once so it shows."""
    params = {
        "run_id": run_id,
        "day": campaign_date,
        "model": model_version,
        "dry_run": dry_run,
        "shard": shard,
        "shards": shards,
        "settings": Json(rules_json),
    }
    with conn.cursor() as cur:
        cur.execute(campaign_sql(sql_dir, "run_insert"), params)
        cur.execute(campaign_sql(sql_dir, "run_lock"), params)
        date0, count0, state0, dry0, model0 = cur.fetchone()
        if date0 != campaign_date:
            raise RecsysError(f"run {run_id!r} is for campaign date {date0}, not {campaign_date}")
        if count0 != shards:
            raise RecsysError(f"run {run_id!r} was started with {count0} shard(s), not {shards}")
        if state0 == "published":
            raise RecsysError(f"run {run_id!r} is already published: score the date again under a new run id")
        if dry0 != dry_run:
            raise RecsysError(f"run {run_id!r} is {'a' if dry0 else 'not a'} dry run")
        if model0 != model_version:
            raise RecsysError(f"run {run_id!r} scores with model {model0}, not {model_version}")
        cur.execute(campaign_sql(sql_dir, "shard_start"), params)
        cur.execute(campaign_sql(sql_dir, "run_scoring"), params)
        if not dry_run and shards > 1:
            # shards share the date's partitions, sub-partitioned by hash of user_id, each attaching
            # its own: DDL in this short transaction, not in the long write (creating a partition
            # locks campaign_offers exclusively, briefly)
            cur.execute(campaign_sql(sql_dir, "partition_ensure"), params)
        elif not dry_run:
            drop_empty_partition(cur, sql_dir, campaign_date)
        if not dry_run:
            # a date sub-partitioned for another shard count (or by a failed sharded run) gets its
            # missing sub-partitions, so every row this run writes has one
            cur.execute(campaign_sql(sql_dir, "partition_complete"), params)
    conn.commit()


def mark_failed(conn: Connection, sql_dir: Path, run_id: str, shard: int, message: str) -> None:
    """Record a shard's failure and commit it (call after rolling back the failed work)."""
    params = {"run_id": run_id, "shard": shard, "message": message[:2000]}
    with conn.cursor() as cur:
        cur.execute(campaign_sql(sql_dir, "shard_failed"), params)
        cur.execute(campaign_sql(sql_dir, "run_failed"), params)
    conn.commit()


def finish_shard(
    conn: Connection,
    sql_dir: Path,
    run_id: str,
    shard: tuple[int, int],
    dry_run: bool,
    counts: dict[str, Any],
    timings: dict[str, float],
) -> None:
    """Mark shard (k, n) done with its counts and timings, sum them into the run, and commit."""
    k, n = shard
    with conn.cursor() as cur:
        params = {"counts": Json(counts), "timings": Json(timings), "run_id": run_id, "shard": k}
        cur.execute(campaign_sql(sql_dir, "shard_done"), params)
        _aggregate_run(cur, sql_dir, run_id, dry_run)
    conn.commit()
    log.info(
        "run %s shard %d/%d: %d offers, %d rests, %d holdout, skipped %s",
        run_id,
        k,
        n,
        counts["offers"],
        counts.get("rests", 0),
        counts["holdout"],
        counts["skipped"],
    )


def shard_counts(
    catalog: Catalog, reasons: np.ndarray, action: np.ndarray, explore: np.ndarray, holdout: np.ndarray
) -> dict[str, Any]:
    """The shard's summary counts: users, eligible, offers, rests (eligible, not held out, the
    policy chose no offer tonight), holdout, skips and offers by attribute."""
    acts = catalog.actions
    eligible = reasons == ""
    rested = ~holdout & catalog.is_rest(action)
    offered = ~holdout & ~rested
    channel_of = np.array([a.channel for a in acts], dtype=object)
    type_of = np.array([a.offer_type for a in acts], dtype=object)
    timing_of = np.array([a.timing for a in acts], dtype=object)
    per_action = np.bincount(action[offered], minlength=catalog.n_actions)
    return {
        "users": len(reasons),
        "eligible": int(eligible.sum()),
        "offers": int(offered.sum()),
        "rests": int(rested.sum()),
        "holdout": int(holdout.sum()),
        "exploration": int(explore.sum()),
        "skipped": _count(reasons[~eligible]),
        "channel": _count_by(per_action, channel_of),
        "offer_type": _count_by(per_action, type_of),
        "timing": _count_by(per_action, timing_of),
    }


def _count(values: np.ndarray) -> dict[str, int]:
    """Occurrences of each value (vectorised: pandas hashes the column)."""
    return {str(k): int(v) for k, v in pd.Series(values, dtype=object).value_counts(sort=False).items()}


def _count_by(per_action: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """Offers per action (bincount) summed by an action attribute (channel, type, timing)."""
    out: dict[str, int] = {}
    for label, n in zip(labels.tolist(), per_action.tolist(), strict=True):  # 108 actions, not users
        if n:
            out[label] = out.get(label, 0) + n
    return out


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict):
            _merge(into.setdefault(key, {}), value)
        elif isinstance(value, int | float):
            into[key] = into.get(key, 0) + value


def _aggregate_run(cur: Any, sql_dir: Path, run_id: str, dry_run: bool) -> None:
    """Sum the done shards' counts and timings into the run (its row lock serialises shards)."""
    cur.execute(campaign_sql(sql_dir, "run_row_lock"), {"run_id": run_id})
    cur.execute(campaign_sql(sql_dir, "done_shard_totals"), {"run_id": run_id})
    counts: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    for c, t in cur.fetchall():
        _merge(counts, c)
        _merge(timings, t)
    cur.execute(
        campaign_sql(sql_dir, "run_totals"),
        {"counts": Json(counts), "timings": Json(timings), "run_id": run_id, "dry_run": dry_run},
    )
