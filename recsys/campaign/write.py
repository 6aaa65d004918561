"""Campaign write: one shard's decisions into campaign_offers and campaign_holdout, in the run's
transaction (the caller commits).

The decisions go into staging tables with COPY BINARY; the offers (the schedule and the first-name
fill computed in SQL) then either fill a new daily partition that is attached at the end (the
nightly common case; in a sharded run, each shard's own hash sub-partition of the date's) or are
upserted into the existing one (re-runs), replacing only still-scheduled offers. A run killed before
its commit leaves nothing.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from psycopg2 import sql
from psycopg2.extras import execute_values

from recsys.campaign.decide import CHANNELS, SKIP_REASONS
from recsys.campaign.messages import GSM_BASIC_PATTERN, MARKER, Renderer
from recsys.campaign.pgcopy import binary_copy
from recsys.campaign.queries import campaign_sql, composed
from recsys.config.catalog import BEST_HOUR, Catalog
from recsys.config.rules import CampaignRules
from recsys.db import Connection


@dataclass(frozen=True)
class Decisions:
    """One shard's decisions, ready to write: one entry per eligible user (offered or held out)."""

    run_id: str
    campaign_date: dt.date
    shard: int
    shards: int
    model_version: str
    user_ids: np.ndarray
    actions: np.ndarray
    propensity: np.ndarray
    is_exploration: np.ndarray
    is_holdout: np.ndarray
    message_id: np.ndarray
    category_codes: np.ndarray
    """Code k (1-based) of `categories[k - 1]`, per user."""
    segment_codes: np.ndarray
    """Code k (1-based) of `segments[k - 1]`, per user."""
    categories: list[str]
    segments: list[str]
    messages: list[tuple]
    """The distinct rendered messages, by message id (see `render_messages`)."""
    is_rest: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Per eligible user: the action is the rest (no offer tonight); empty: no rests."""
    skipped_user_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """The users a hard rule skipped (recorded as skipped, never as rests)."""
    skip_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    """Per skipped user: 1 + the index of its reason in SKIP_REASONS."""
    skipped_segment_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    """Per skipped user: code k (1-based) of `segments[k - 1]` (0: unknown)."""


def render_messages(
    renderer: Renderer, catalog: Catalog, actions: np.ndarray, categories: np.ndarray
) -> tuple[np.ndarray, list[tuple]]:
    """Render each distinct (action without timing, category) once; message id per user (-1 for a
    rest: nothing is sent, there is no message)."""
    rest = catalog.is_rest(actions)
    if rest.any():
        message_id = np.full(len(actions), -1, dtype=np.int64)
        sent = np.flatnonzero(~rest)
        message_id[sent], messages = render_messages(renderer, catalog, actions[sent], categories[sent])
        return message_id, messages
    acts = catalog.actions
    # the text does not depend on timing: key on (offer type, value, channel) and the category
    base = np.array([a.action_id // len(catalog.timings) for a in acts])
    category_type = np.array([a.offer_type in catalog.category_offer_types for a in acts])
    cat_codes, cat_values = pd.factorize(pd.Series(categories, dtype=object))
    cat_key = np.where(category_type[actions], cat_codes, -1)
    keys = base[actions].astype(np.int64) * (len(cat_values) + 1) + (cat_key + 1)
    unique, message_id = np.unique(keys, return_inverse=True)
    messages = []
    for i, k in enumerate(unique):
        b, c = divmod(int(k), len(cat_values) + 1)
        a = acts[b * len(catalog.timings)]
        category = None if c == 0 else str(cat_values[c - 1])
        r = renderer.render(a.channel, a.offer_type, a.value, category)
        marker_count = r.body.count(MARKER)
        messages.append(
            (
                i,
                r.subject,
                r.body,
                r.is_html,
                r.max_chars,
                r.fallback_subject,
                r.fallback_body,
                marker_count,
                len(r.body) - marker_count * len(MARKER),
            )
        )
    return message_id.astype(np.int64), messages


def write_decisions(
    conn: Connection,
    sql_dir: Path,
    d: Decisions,
    rules: CampaignRules,
    catalog: Catalog,
    timings: dict[str, float],
    publish_at: dt.datetime | None = None,
) -> dict[str, int]:
    """Stage the decisions with COPY, write offers (attach or upsert), holdout and every scored
    user's decision (campaign_decisions: offer, rest, holdout, skipped); the caller commits.

    The offers are scheduled for the publish moment `publish_at` (None: now); publishing re-times
    those whose release it moves."""
    t = time.perf_counter()
    pending: list[_ShardPartition] = []  # a sharded date's own sub-partitions, attached last
    with conn.cursor() as cur:
        bad_timezones = _stage(cur, sql_dir, d, rules, catalog)
        timings["write_staging"] = time.perf_counter() - t
        t = time.perf_counter()
        path, written, replaced = _write_offers(cur, sql_dir, d, _offer_params(d, rules, publish_at), pending)
        timings[f"write_{path}"] = time.perf_counter() - t
        # step 3: the holdout rows
        params = {"run_id": d.run_id, "day": d.campaign_date, "model": d.model_version}
        cur.execute(campaign_sql(sql_dir, "holdout_insert"), params)
        # step 4: every scored user's decision, replacing the shard's of an earlier run
        t = time.perf_counter()
        _stage_decisions(cur, d)
        decided = _write_decisions(cur, sql_dir, d, params, pending)
        timings["write_decisions"] = time.perf_counter() - t
        # step 5: the shard's own tables, already indexed, join the date's partitions. ATTACH holds
        # the date's partition against the other shards' ATTACHes until this transaction commits,
        # so it comes last: the shards build their tables and indexes side by side, not in turn.
        t = time.perf_counter()
        for own in pending:
            own.attach(cur, sql_dir)
            if own.table == "campaign_offers":
                _attached()
        if pending:
            timings[f"write_{path}"] += time.perf_counter() - t
    return {
        "offers_written": written,
        "offers_removed": replaced,
        "decisions_written": decided,
        "timezone_fallback_utc": bad_timezones,
        "write_path": path,
    }


DECISION_CODES = ("offer", "rest", "holdout", "skipped")
"""campaign_decisions.decision by code (sql/campaign/decisions_insert.sql decodes the same order)."""


def _stage_decisions(cur: Any, d: Decisions) -> None:
    """COPY every scored user's decision into stage_decisions: the eligible users (offer, rest or
    holdout) and the skipped ones (with their reason's code), in user order, so that the insert
    fills the key's index in order (1M rows: 4.2 to 4.8 s, docs/performance.md)."""
    n, m = len(d.user_ids), len(d.skipped_user_ids)
    rest = d.is_rest if len(d.is_rest) == n else np.zeros(n, dtype=bool)
    code = np.where(d.is_holdout, 2, np.where(rest, 1, 0)).astype(np.int16)
    columns = [
        (np.concatenate([d.user_ids, d.skipped_user_ids]), ">i8"),
        (np.concatenate([code, np.full(m, 3, dtype=np.int16)]), ">i2"),
        (np.concatenate([d.actions, np.zeros(m, dtype=np.int64)]), ">i4"),
        (np.concatenate([d.propensity, np.ones(m)]), ">f8"),
        (np.concatenate([d.is_exploration, np.zeros(m, dtype=bool)]), "u1"),
        (np.concatenate([np.zeros(n, dtype=np.int16), d.skip_codes]), ">i2"),
        (np.concatenate([d.segment_codes, _codes(d.skipped_segment_codes, m)]), ">i4"),
    ]
    order = np.argsort(columns[0][0], kind="stable")
    columns = [(values[order], kind) for values, kind in columns]
    cur.copy_expert("copy stage_decisions from stdin with (format binary)", binary_copy(columns))


def _write_decisions(
    cur: Any, sql_dir: Path, d: Decisions, params: dict[str, Any], pending: list[_ShardPartition]
) -> int:
    """The staged decisions into campaign_decisions; returns the rows written.

    As for the offers: a date without a decisions partition (the nightly case) gets one built as a
    bare table and attached (one sorted build of its key: 1M rows in 3.0 s against 4.8 s through the
    key of a table already holding two nights, level on an empty one; docs/performance.md), and so
    does a shard of a sharded date (its own hash sub-partition, indexed here and appended to
    `pending`, which the caller attaches last); otherwise (re-runs) the shard's
    earlier decisions go and the new ones are inserted."""
    name = f"campaign_decisions_{d.campaign_date:%Y%m%d}"
    part = sql.Identifier("recsys", name)
    cur.execute(campaign_sql(sql_dir, "partition_exists"), {"name": f"recsys.{name}"})
    if d.shards == 1 and not cur.fetchone()[0]:
        bounds = {"lo": d.campaign_date, "hi": d.campaign_date + dt.timedelta(days=1)}
        check = sql.Identifier(f"{name}_bound")
        cur.execute(composed(sql_dir, "decisions_partition_create", part=part, check_name=check), bounds)
        comment = {"comment": f"campaign_decisions of {d.campaign_date}"}
        cur.execute(composed(sql_dir, "partition_comment", part=part), comment)
        cur.execute(composed(sql_dir, "decisions_insert", target=part), params)
        written = cur.rowcount
        cur.execute("set local maintenance_work_mem = '256MB'")  # the key's sort stays in memory
        cur.execute(composed(sql_dir, "decisions_partition_attach", part=part), bounds)
        return written
    own = _shard_partition(cur, sql_dir, "campaign_decisions", d)
    if own is not None:
        cur.execute(composed(sql_dir, "decisions_insert", target=own.part), params)
        written = cur.rowcount
        own.build_indexes(cur, sql_dir)
        pending.append(own)
        return written
    shard = {"day": d.campaign_date, "shards": d.shards, "shard": d.shard}
    cur.execute(campaign_sql(sql_dir, "decisions_clear"), shard)
    cur.execute(composed(sql_dir, "decisions_insert", target=sql.Identifier("recsys", "campaign_decisions")), params)
    return cur.rowcount


@dataclass(frozen=True)
class _ShardPartition:
    """A shard's own hash sub-partition of a sharded date's partition, created bare: fill, index, attach."""

    table: str
    part: sql.Identifier
    date_part: sql.Identifier
    bounds: dict[str, Any]

    def build_indexes(self, cur: Any, sql_dir: Path) -> None:
        """Every index the date's partition declares, built on the filled table (one sorted build
        each), so ATTACH adopts them instead of building them while it holds the date's partition."""
        cur.execute("set local maintenance_work_mem = '256MB'")  # the index sorts stay in memory
        cur.execute(campaign_sql(sql_dir, "shard_partition_indexes"), self.bounds)

    def attach(self, cur: Any, sql_dir: Path) -> None:
        cur.execute(composed(sql_dir, "shard_partition_attach", part=self.part, date_part=self.date_part), self.bounds)


def _shard_partition(cur: Any, sql_dir: Path, table: str, d: Decisions) -> _ShardPartition | None:
    """Shard K of N's own sub-partition of the date's `table` partition, created bare, when that
    partition is sub-partitioned by hash of user_id for N shards and K's is not there yet (the
    nightly case of a sharded run: `recsys.ensure_date_partition`); None otherwise (a re-run of the
    shard, or a date scored another way: the write goes through the date's partition).

    The shard's users are exactly the remainder K of the hash (`recsys.in_campaign_shard`), so the
    shard fills the table alone and builds its indexes in one sorted pass each, as the unsharded
    night's ATTACH does for the whole date; shards on other workers do the same in parallel. The
    ATTACH itself, which adopts those indexes, waits for the end of the write: it holds the date's
    partition against the other shards' ATTACHes until the transaction commits."""
    if d.shards == 1:
        return None
    date_name = f"{table}_{d.campaign_date:%Y%m%d}"
    shard = {"name": f"recsys.{date_name}", "shards": d.shards, "shard": d.shard}
    cur.execute(campaign_sql(sql_dir, "shard_partition_target"), shard)
    row = cur.fetchone()
    if row is None or not row[0]:
        return None
    name = f"{date_name}_s{d.shard}of{d.shards}"
    part, date_part = sql.Identifier("recsys", name), sql.Identifier("recsys", date_name)
    bounds = {
        "lo": d.campaign_date,
        "hi": d.campaign_date + dt.timedelta(days=1),
        "part": f"recsys.{name}",
        "date_part": f"recsys.{date_name}",
        "shards": d.shards,
        "shard": d.shard,
    }
    names = {"check_name": sql.Identifier(f"{name}_bound"), "hash_name": sql.Identifier(f"{name}_hash")}
    parent = sql.Identifier("recsys", table)
    cur.execute(composed(sql_dir, "shard_partition_create", part=part, parent=parent, **names), bounds)
    comment = {"comment": f"{table} of {d.campaign_date}, shard {d.shard} of {d.shards}"}
    cur.execute(composed(sql_dir, "partition_comment", part=part), comment)
    return _ShardPartition(table, part, date_part, bounds)


def _codes(codes: np.ndarray, m: int) -> np.ndarray:
    return codes if len(codes) == m else np.zeros(m, dtype=np.int32)


def skip_codes(reasons: np.ndarray) -> np.ndarray:
    """int16 per skipped user: 1 + the index of its reason in SKIP_REASONS."""
    codes = np.zeros(len(reasons), dtype=np.int16)
    for k, reason in enumerate(SKIP_REASONS, 1):
        codes[reasons == reason] = k
    return codes


_STAGED = ("stage_offers", "stage_actions", "stage_messages", "stage_timings", "stage_quiet", "stage_codes")


def _stage(cur: Any, sql_dir: Path, d: Decisions, rules: CampaignRules, catalog: Catalog) -> int:
    """Step 1: COPY the decisions and their lookups into staging tables; returns the offered users
    whose time zone PostgreSQL does not know (scheduled in UTC)."""
    cur.execute(campaign_sql(sql_dir, "stage_tables"))
    columns = [
        (d.user_ids, ">i8"),
        (d.actions, ">i4"),
        (d.propensity, ">f8"),
        (d.is_exploration, "u1"),
        (d.is_holdout, "u1"),
        (d.message_id, ">i4"),
        (d.category_codes, ">i4"),
        (d.segment_codes, ">i4"),
    ]
    cur.copy_expert("copy stage_offers from stdin with (format binary)", binary_copy(columns))
    units, category_types = catalog.value_units, catalog.category_offer_types
    execute_values(
        cur,
        "insert into stage_actions values %s",
        [
            (
                a.action_id,
                a.offer_type,
                a.value,
                units.get(a.offer_type, "none"),
                a.channel,
                a.timing,
                a.offer_type in category_types,
                a.is_rest,
            )
            for a in catalog.actions
        ],
    )
    if d.messages:
        execute_values(cur, "insert into stage_messages values %s", d.messages)
    delays, quiet = _schedule_params(catalog, rules)
    codes = [("category", k, v) for k, v in enumerate(d.categories, 1)]
    execute_values(
        cur, "insert into stage_codes values %s", codes + [("segment", k, v) for k, v in enumerate(d.segments, 1)]
    )
    execute_values(cur, "insert into stage_timings values %s", delays)
    execute_values(cur, "insert into stage_quiet values %s", quiet)
    cur.execute(campaign_sql(sql_dir, "stage_timezones"))
    cur.execute("analyze stage_timezones")
    cur.execute(campaign_sql(sql_dir, "stage_unknown_timezones"))
    bad_timezones = int(cur.fetchone()[0])
    for table in _STAGED:
        cur.execute(sql.SQL("analyze {}").format(sql.Identifier(table)))  # the planner needs real row counts
    if BEST_HOUR in catalog.timings:
        # one join of the best_hour offers with the date's features: their local send times
        best = {"day": d.campaign_date, "min_certainty": rules.best_hour_min_certainty}
        cur.execute(campaign_sql(sql_dir, "stage_best_times"), {**best, "best_default": rules.best_hour_default})
    cur.execute("analyze stage_best_times")
    # sorts and hashes of a million staged rows in memory, not in temp files
    cur.execute("set local work_mem = '256MB'")
    # A fresh daily partition has no statistics yet (autovacuum has not seen it): the planner would
    # guess one row and pick nested loops over a million. Every join here is a bulk one. Disabling a
    # join method adds a huge cost to plans that would use it, which crosses jit_above_cost: the
    # schedule's 648-row query then spent 2 s compiling (1M users, auto_explain), so no JIT here.
    cur.execute("set local enable_nestloop = off; set local jit = off")
    return bad_timezones


def _schedule_params(catalog: Catalog, rules: CampaignRules) -> tuple[list[tuple], list[tuple]]:
    timings = [(t, int(catalog.timing_delay_minutes[t])) for t in catalog.timings]
    quiet = [(ch, *rules.quiet_hours.get(ch, (None, None))) for ch in CHANNELS]
    return timings, quiet


def _publish_at_scoring() -> dt.datetime:
    """The publish moment the offers are scheduled for while scoring: now (publishing re-times them;
    a seam for tests that stop a run right after its COPY)."""
    return dt.datetime.now(dt.UTC)


def _offer_params(d: Decisions, rules: CampaignRules, publish_at: dt.datetime | None) -> dict[str, Any]:
    return {
        "day": d.campaign_date,
        "send_time": rules.send_time,
        "publish_at": _publish_at_scoring() if publish_at is None else publish_at,
        "validity": rules.validity_hours,
        "max_attempts": rules.max_attempts,
        "marker": MARKER,
        "gsm_pattern": GSM_BASIC_PATTERN,
        "run_id": d.run_id,
        "model": d.model_version,
    }


def _write_offers(
    cur: Any, sql_dir: Path, d: Decisions, params: dict[str, Any], pending: list[_ShardPartition]
) -> tuple[str, int, int]:
    """Step 2: the offers, by attaching a new partition (the date's; a sharded date's shard's own,
    indexed here and appended to `pending` for the caller to attach) or upserting; (path, written,
    removed)."""
    cur.execute(campaign_sql(sql_dir, "stage_schedule"), params)
    cur.execute("analyze stage_schedule")
    if d.shards == 1 and not partition_exists(cur, sql_dir, d.campaign_date):
        cur.execute(campaign_sql(sql_dir, "holdout_clear_date"), {"day": d.campaign_date})
        return "attach", _attach_partition(cur, sql_dir, d.campaign_date, params), 0
    own = _shard_partition(cur, sql_dir, "campaign_offers", d)
    if own is not None:
        shard = {"day": d.campaign_date, "shards": d.shards, "shard": d.shard}
        cur.execute(campaign_sql(sql_dir, "upsert_remove_holdout"), shard)
        cur.execute(_offers(sql_dir, "offers_insert", target=own.part), params)
        written = cur.rowcount
        own.build_indexes(cur, sql_dir)
        pending.append(own)
        return "attach_shard", written, 0
    written, replaced = _upsert(cur, sql_dir, d.campaign_date, d.shard, d.shards, params)
    return "upsert", written, replaced


def partition_name(campaign_date: dt.date) -> str:
    """The daily campaign_offers partition's name (retention parses the date back from it)."""
    return f"campaign_offers_{campaign_date:%Y%m%d}"


def partition_exists(cur: Any, sql_dir: Path, campaign_date: dt.date) -> bool:
    cur.execute(campaign_sql(sql_dir, "partition_exists"), {"name": f"recsys.{partition_name(campaign_date)}"})
    return bool(cur.fetchone()[0])


def drop_empty_partition(cur: Any, sql_dir: Path, campaign_date: dt.date) -> None:
    """An empty partition of the date (left by an older version, a helper or a failed sharded run)
    goes, so the write can build the partition standalone and attach it. Dropping locks
    campaign_offers exclusively, so it happens here, in the short committed start transaction, never
    inside the long write."""
    part = sql.Identifier("recsys", partition_name(campaign_date))
    if partition_exists(cur, sql_dir, campaign_date):
        cur.execute(composed(sql_dir, "partition_has_rows", part=part))
        if not cur.fetchone()[0]:
            cur.execute(composed(sql_dir, "partition_drop", part=part))


def _attached() -> None:
    """Called inside the write right after ATTACH PARTITION (a seam for tests that kill a run there)."""


def _offers(sql_dir: Path, name: str, **identifiers: sql.Composable) -> sql.Composed:
    """An insert of the staged decisions as offers (offers_insert or offers_upsert)."""
    return composed(sql_dir, name, offers=sql.SQL(campaign_sql(sql_dir, "offers_select")), **identifiers)


def _attach_partition(cur: Any, sql_dir: Path, campaign_date: dt.date, params: dict[str, Any]) -> int:
    """The nightly common case, a date without a partition: build it as a standalone table, fill it
    with one INSERT ... SELECT, then ATTACH it; returns the rows written.

    Per-row btree maintenance of four indexes dominated the upsert into an indexed partition; here
    the rows go into a bare heap and ATTACH builds each index the parent declares with one sorted
    build (so the partition's indexes always match the parent's). The CHECK constraint equals the
    partition bound, so ATTACH skips its validation scan. ATTACH takes only SHARE UPDATE EXCLUSIVE
    on campaign_offers: senders keep claiming other dates meanwhile. All in the run's transaction:
    a run killed before its commit leaves no partition and no rows.
    """
    name = partition_name(campaign_date)
    part = sql.Identifier("recsys", name)
    bounds = {"lo": campaign_date, "hi": campaign_date + dt.timedelta(days=1)}
    cur.execute(composed(sql_dir, "partition_create", part=part, check_name=sql.Identifier(f"{name}_bound")), bounds)
    cur.execute(composed(sql_dir, "partition_comment", part=part), {"comment": f"campaign_offers of {campaign_date}"})
    cur.execute(_offers(sql_dir, "offers_insert", target=part), params)
    written = cur.rowcount
    cur.execute("set local maintenance_work_mem = '256MB'")  # the index sorts stay in memory
    cur.execute(composed(sql_dir, "partition_attach", part=part), bounds)
    _attached()
    return written


def _upsert(
    cur: Any, sql_dir: Path, campaign_date: dt.date, shard: int, shards: int, offer_params: dict[str, Any]
) -> tuple[int, int]:
    """Re-runs, shards and dates that already have offers: merge into the partition; (written, removed)."""
    params = {"day": campaign_date, "shards": shards, "shard": shard}
    cur.execute(campaign_sql(sql_dir, "upsert_remove_offers"), params)
    replaced = cur.rowcount
    cur.execute(campaign_sql(sql_dir, "upsert_remove_holdout"), params)
    cur.execute(_offers(sql_dir, "offers_upsert"), offer_params)
    return cur.rowcount, replaced
