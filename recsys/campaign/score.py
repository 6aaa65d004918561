"""Campaign scoring: tonight's offer for every eligible user, written as scheduled offers.

`score_campaign` is the stage the CLI (`recsys score`) and the nightly DAG call; `publish_run`
makes a run's offers claimable. Steps of one run (or one shard of it):

1. load: one COPY of every user with features as of the campaign date (of the shard), with
   consent, recent offers and conversions, computed in SQL;
2. score: eligibility and the allowed-action mask (consent and address, frequency caps, cooldown)
   in numpy, the policy's greedy action on masked logits (batched torch), the holdout and
   exploration draws from stable hashes, exact propensities;
3. render: each distinct (channel, offer type, value, category) once;
4. write: COPY of the decisions into a staging table, then one upsert into campaign_offers (the
   schedule and the first-name fill computed in SQL), the holdout rows and the shard row, in one
   transaction. A run killed before its commit leaves nothing; a re-run replaces scheduled offers
   and never touches claimed, sent, failed, expired or cancelled ones.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from psycopg2 import sql
from psycopg2.extras import Json, execute_values

from recsys.campaign import hashing
from recsys.campaign.messages import GSM_BASIC, MARKER, Renderer
from recsys.config.catalog import Catalog, load_catalog
from recsys.config.rules import CampaignRules, load_rules
from recsys.config.settings import Settings
from recsys.db import Connection, connect, database_url, fetch_all, fetch_value
from recsys.db.sqlfiles import load_sql
from recsys.errors import RecsysError
from recsys.evaluation.registry import get_model, require_champion
from recsys.model.observation import FEATURE_NAMES, N_FEATURES, normalise
from recsys.model.policy import PPOPolicy, load_sb3_model

log = logging.getLogger(__name__)

CHANNELS = ("email", "sms", "push")
SKIP_REASONS = ("no_consent", "inactive", "cooldown", "frequency_cap")


def _sql(sql_dir: Path, name: str) -> str:
    """The text of sql/campaign/<name>.sql."""
    return load_sql(sql_dir, f"campaign/{name}")


def _composed(sql_dir: Path, name: str, **identifiers: sql.Composable) -> sql.Composed:
    """sql/campaign/<name>.sql with its {placeholders} filled by identifiers (or composed SQL)."""
    return sql.SQL(_sql(sql_dir, name)).format(**identifiers)


def _default_run_id(campaign_date: dt.date) -> str:
    return f"cli-{campaign_date.isoformat()}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%fZ')}"


def _parse_shard(shard: int | None, shards: int) -> tuple[int, int]:
    if shards < 1:
        raise RecsysError(f"shards must be >= 1, got {shards}")
    k = 0 if shard is None else shard
    if not 0 <= k < shards:
        raise RecsysError(f"shard {k} is not in 0..{shards - 1}")
    return k, shards


_PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags 0, no header extension


_LOAD_INTS = ("ok_email", "ok_sms", "ok_push", "active", "cooldown", "n_total", "n_email", "n_sms", "n_push")
_N_LOADED_FEATURES = N_FEATURES - 3  # + the three consent flags, loaded as integers


def _load(
    conn: Connection, sql_dir: Path, campaign_date: dt.date, rules: CampaignRules, shard: int, shards: int
) -> pd.DataFrame:
    """Every user with features as of the date (in the shard), with eligibility inputs.

    One COPY BINARY of fixed-width, non-null fields (the category as a code into the date's sorted
    categories), read by one numpy structured array: no text parsing of a million rows.
    """
    pairs = fetch_all(conn, _sql(sql_dir, "load_category_pairs"), {"day": campaign_date})
    categories = sorted({r["top_category"] for r in pairs})
    segments = sorted({r["segment"] for r in pairs})
    # features stored as double travel as real: half the bytes, and float32 is what the policy reads
    features = sql.SQL(", ").join(sql.SQL("{}::real").format(sql.Identifier("f", n)) for n in FEATURE_NAMES[:-3])
    query = _composed(sql_dir, "load_users", features=features)
    params = {
        "day": campaign_date,
        "cap_from": campaign_date - dt.timedelta(days=rules.cap_window_days),
        "cool_from": campaign_date - dt.timedelta(days=rules.cooldown_days),
        "active_days": rules.active_window_days,
        "shards": shards,
        "shard": shard,
        "categories": categories,
        "segments": segments,
    }
    buffer = io.BytesIO()
    with conn.cursor() as cur:
        # On 2 busy cores, parallel workers funnelling a million wide rows through a Gather cost more
        # than they save; the hashes stay in memory. (Rows come unordered: numpy sorts them below.)
        cur.execute("set local max_parallel_workers_per_gather = 0; set local work_mem = '256MB'")
        cur.copy_expert(cur.mogrify(query, params).decode(), buffer)
    fields: list[tuple[str, str]] = [("count", ">i2"), ("len_user_id", ">i4"), ("user_id", ">i8")]
    kinds = {n: ">f4" for n in FEATURE_NAMES[:-3]}
    kinds.update({n: ">i4" for n in (*FEATURE_NAMES[-3:], *_LOAD_INTS, "category_code", "segment_code")})
    for name, kind in kinds.items():
        fields += [(f"len_{name}", ">i4"), (name, kind)]
    layout = np.dtype(fields)
    data = buffer.getbuffer()
    body = len(data) - len(_PGCOPY_HEADER) - 2  # the header and the -1 trailer
    if body % layout.itemsize or bytes(data[: len(_PGCOPY_HEADER)]) != _PGCOPY_HEADER:
        raise RecsysError(f"campaign load of {campaign_date}: unexpected COPY BINARY layout ({len(data)} bytes)")
    rows = np.frombuffer(data, dtype=layout, count=body // layout.itemsize, offset=len(_PGCOPY_HEADER))
    if len(rows) and (rows["count"] != len(kinds) + 1).any():
        raise RecsysError(f"campaign load of {campaign_date}: unexpected field count in COPY BINARY rows")
    order = np.argsort(rows["user_id"], kind="stable")  # by user_id, as before
    frame = {"user_id": rows["user_id"].astype(np.int64)[order]}
    for name in kinds:
        frame[name] = rows[name].astype(np.float32 if name in FEATURE_NAMES else np.int64)[order]
    if (frame["category_code"] == 0).any() or (frame["segment_code"] == 0).any():
        raise RecsysError(f"the features as of {campaign_date} changed during the campaign load: score again")
    frame["top_category"] = np.array(["", *categories], dtype=object)[frame["category_code"]]
    del rows, data
    users = pd.DataFrame(frame)
    # code k (1-based) names categories[k - 1] / segments[k - 1]; the write joins them back in SQL
    users.attrs.update(categories=list(categories), segments=list(segments))
    return users


def _resolve_model(
    conn: Connection, sql_dir: Path, run_id: str, campaign_date: dt.date, model_version: str | None
) -> str:
    """--model, else the run's model, else the date's last recorded model, else the champion."""
    if model_version:
        return get_model(conn, model_version).model_version
    recorded = fetch_value(conn, _sql(sql_dir, "resolve_run_model"), {"run_id": run_id})
    if recorded:
        return recorded
    recorded = fetch_value(conn, _sql(sql_dir, "resolve_date_model"), {"day": campaign_date})
    if recorded:
        return recorded
    return require_champion(conn).model_version


def _start_run(
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
        cur.execute(_sql(sql_dir, "run_insert"), params)
        cur.execute(_sql(sql_dir, "run_lock"), params)
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
        cur.execute(_sql(sql_dir, "shard_start"), params)
        cur.execute(_sql(sql_dir, "run_scoring"), params)
        if not dry_run and shards > 1:
            # shards upsert into one shared partition: DDL in this short transaction, not in the long
            # write (creating a partition locks campaign_offers exclusively, briefly)
            cur.execute(_sql(sql_dir, "partition_ensure"), params)
        elif not dry_run:
            _drop_empty_partition(cur, sql_dir, campaign_date)
    conn.commit()


def partition_name(campaign_date: dt.date) -> str:
    """The daily campaign_offers partition's name (retention parses the date back from it)."""
    return f"campaign_offers_{campaign_date:%Y%m%d}"


def _partition_exists(cur: Any, sql_dir: Path, campaign_date: dt.date) -> bool:
    cur.execute(_sql(sql_dir, "partition_exists"), {"name": f"recsys.{partition_name(campaign_date)}"})
    return bool(cur.fetchone()[0])


def _drop_empty_partition(cur: Any, sql_dir: Path, campaign_date: dt.date) -> None:
    """An empty partition of the date (left by an older version or a helper) goes, so the write can
    build the partition standalone and attach it. Dropping locks campaign_offers exclusively, so it
    happens here, in the short committed start transaction, never inside the long write."""
    part = sql.Identifier("recsys", partition_name(campaign_date))
    if _partition_exists(cur, sql_dir, campaign_date):
        cur.execute(_composed(sql_dir, "partition_has_rows", part=part))
        if not cur.fetchone()[0]:
            cur.execute(_composed(sql_dir, "partition_drop", part=part))


def _mark_failed(url: str, sql_dir: Path, run_id: str, shard: int, message: str) -> None:
    params = {"run_id": run_id, "shard": shard, "message": message[:2000]}
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(_sql(sql_dir, "shard_failed"), params)
        cur.execute(_sql(sql_dir, "run_failed"), params)


def allowed_mask(users: pd.DataFrame, catalog: Catalog, rules: CampaignRules) -> tuple[np.ndarray, np.ndarray]:
    """(channel_ok (n, 3), action mask (n, n_actions)): consent with an address, caps, cooldown."""
    n = len(users)
    channel_ok = np.stack([users[f"ok_{ch}"].to_numpy() > 0 for ch in CHANNELS], axis=1)
    capped = users["n_total"].to_numpy() >= rules.cap_total
    per_channel = np.zeros((n, 3), bool)
    for j, ch in enumerate(CHANNELS):
        if ch in rules.cap_per_channel:
            per_channel[:, j] = users[f"n_{ch}"].to_numpy() >= rules.cap_per_channel[ch]
    cool = users["cooldown"].to_numpy() > 0 if rules.cooldown_days > 0 else np.zeros(n, bool)
    active = users["active"].to_numpy() > 0
    usable = channel_ok & ~per_channel & (active & ~capped & ~cool)[:, None]
    cols = np.array([CHANNELS.index(a.channel) for a in catalog.actions])
    return channel_ok, usable[:, cols]


def skip_reasons(users: pd.DataFrame, channel_ok: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per user the first reason they get nothing ('' when eligible), in SKIP_REASONS order."""
    reason = np.full(len(users), "", dtype=object)
    has_mask = mask.any(axis=1)
    checks = (
        ("no_consent", ~channel_ok.any(axis=1)),
        ("inactive", users["active"].to_numpy() == 0),
        ("cooldown", users["cooldown"].to_numpy() > 0),
        ("frequency_cap", ~has_mask),  # the total cap, or every reachable channel at its own cap
    )
    for name, hit in checks:
        reason[(reason == "") & hit & ~has_mask] = name
    return reason


def choose_actions(
    greedy: np.ndarray, mask: np.ndarray, user_ids: np.ndarray, campaign_date: dt.date, rules: CampaignRules
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exploration mixture: (action, propensity, is_exploration) per user with an allowed action.

    With eps = exploration_share and A the allowed set: an explored user's action is uniform on A;
    P(greedy) = (1 - eps) + eps / |A|, P(other allowed a) = eps / |A| (exact under the hash draws).
    """
    eps = rules.exploration_share
    n_allowed = mask.sum(axis=1)
    explore = hashing.uniform(user_ids, rules.exploration_salt, campaign_date.isoformat(), "explore") < eps
    action = greedy.copy()
    rows = np.flatnonzero(explore & (n_allowed > 0))
    if len(rows):
        draw = hashing.uniform(user_ids[rows], rules.exploration_salt, campaign_date.isoformat(), "draw")
        k = np.minimum((draw * n_allowed[rows]).astype(np.int64), n_allowed[rows] - 1)
        position = np.cumsum(mask[rows], axis=1, dtype=np.int32)  # position (1-based) among allowed
        action[rows] = np.argmax(position > k[:, None], axis=1)
    share = eps / np.maximum(n_allowed, 1)
    propensity = np.where(action == greedy, (1.0 - eps) + share, share)
    return action, propensity, explore


def _publish_at_scoring() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _schedule_params(catalog: Catalog, rules: CampaignRules) -> tuple[list[tuple], list[tuple]]:
    timings = [(t, int(catalog.timing_delay_minutes[t])) for t in catalog.timings]
    quiet = [(ch, *rules.quiet_hours.get(ch, (None, None))) for ch in CHANNELS]
    return timings, quiet


def _rules_from_json(settings_json: dict[str, Any]) -> tuple[dt.time, int, list[tuple], list[tuple]]:
    send = dt.time.fromisoformat(settings_json["send_time"])
    quiet = [
        (
            ch,
            dt.time.fromisoformat(settings_json["quiet_hours"][ch]["start"])
            if ch in settings_json["quiet_hours"]
            else None,
            dt.time.fromisoformat(settings_json["quiet_hours"][ch]["end"])
            if ch in settings_json["quiet_hours"]
            else None,
        )
        for ch in CHANNELS
    ]
    timings = [(t, int(m)) for t, m in settings_json["timing_delay_minutes"].items()]
    return send, int(settings_json["validity_hours"]), timings, quiet


def binary_copy(columns: list[tuple[np.ndarray, str]]) -> io.BytesIO:
    """COPY BINARY data of fixed-width, non-null columns, laid out by one numpy structured array.

    Each (values, big-endian numpy type) becomes a PostgreSQL field: '>i8' bigint, '>i4' integer,
    '>f8' double precision, 'u1' boolean. A million rows take milliseconds (CSV text through
    pandas took seconds) and floats travel exactly.
    """
    n = len(columns[0][0])
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for k, (_, kind) in enumerate(columns):
        fields += [(f"len{k}", ">i4"), (f"val{k}", kind)]
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["count"] = len(columns)
    for k, (values, kind) in enumerate(columns):
        rows[f"len{k}"] = np.dtype(kind).itemsize
        rows[f"val{k}"] = values
    return io.BytesIO(_PGCOPY_HEADER + rows.tobytes() + b"\xff\xff")


def _attached() -> None:
    """Called inside the write right after ATTACH PARTITION (a seam for tests that kill a run there)."""


def _offers(sql_dir: Path, name: str, **identifiers: sql.Composable) -> sql.Composed:
    """An insert of the staged decisions as offers (offers_insert or offers_upsert)."""
    return _composed(sql_dir, name, offers=sql.SQL(_sql(sql_dir, "offers_select")), **identifiers)


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
    cur.execute(_composed(sql_dir, "partition_create", part=part, check_name=sql.Identifier(f"{name}_bound")), bounds)
    cur.execute(_composed(sql_dir, "partition_comment", part=part), {"comment": f"campaign_offers of {campaign_date}"})
    cur.execute(_offers(sql_dir, "offers_insert", target=part), params)
    written = cur.rowcount
    cur.execute("set local maintenance_work_mem = '256MB'")  # the index sorts stay in memory
    cur.execute(_composed(sql_dir, "partition_attach", part=part), bounds)
    _attached()
    return written


def _upsert(
    cur: Any, sql_dir: Path, campaign_date: dt.date, shard: int, shards: int, offer_params: dict[str, Any]
) -> tuple[int, int]:
    """Re-runs, shards and dates that already have offers: merge into the partition; (written, removed)."""
    params = {"day": campaign_date, "shards": shards, "shard": shard}
    cur.execute(_sql(sql_dir, "upsert_remove_offers"), params)
    replaced = cur.rowcount
    cur.execute(_sql(sql_dir, "upsert_remove_holdout"), params)
    cur.execute(_offers(sql_dir, "offers_upsert"), offer_params)
    return cur.rowcount, replaced


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
    """The distinct rendered messages, by message id (see `_render`)."""


_STAGED = ("stage_offers", "stage_actions", "stage_messages", "stage_timings", "stage_quiet", "stage_codes")


def _stage(cur: Any, sql_dir: Path, d: Decisions, rules: CampaignRules, catalog: Catalog) -> int:
    """Step 1: COPY the decisions and their lookups into staging tables; returns the offered users
    whose time zone PostgreSQL does not know (scheduled in UTC)."""
    cur.execute(_sql(sql_dir, "stage_tables"))
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
                units[a.offer_type],
                a.channel,
                a.timing,
                a.offer_type in category_types,
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
    cur.execute(_sql(sql_dir, "stage_timezones"))
    cur.execute("analyze stage_timezones")
    cur.execute(_sql(sql_dir, "stage_unknown_timezones"))
    bad_timezones = int(cur.fetchone()[0])
    for table in _STAGED:
        cur.execute(sql.SQL("analyze {}").format(sql.Identifier(table)))  # the planner needs real row counts
    # sorts and hashes of a million staged rows in memory, not in temp files
    cur.execute("set local work_mem = '256MB'")
    # A fresh daily partition has no statistics yet (autovacuum has not seen it): the planner would
    # guess one row and pick nested loops over a million. Every join here is a bulk one.
    cur.execute("set local enable_nestloop = off")
    return bad_timezones


def _offer_params(d: Decisions, rules: CampaignRules) -> dict[str, Any]:
    return {
        "day": d.campaign_date,
        "send_time": rules.send_time,
        "publish_at": _publish_at_scoring(),
        "validity": rules.validity_hours,
        "max_attempts": rules.max_attempts,
        "marker": MARKER,
        "gsm": GSM_BASIC,
        "run_id": d.run_id,
        "model": d.model_version,
    }


def _write_offers(cur: Any, sql_dir: Path, d: Decisions, params: dict[str, Any]) -> tuple[str, int, int]:
    """Step 2: the offers, by attaching a new partition or upserting; (path, written, removed)."""
    cur.execute(_sql(sql_dir, "stage_schedule"), params)
    cur.execute("analyze stage_schedule")
    if d.shards == 1 and not _partition_exists(cur, sql_dir, d.campaign_date):
        cur.execute(_sql(sql_dir, "holdout_clear_date"), {"day": d.campaign_date})
        return "attach", _attach_partition(cur, sql_dir, d.campaign_date, params), 0
    written, replaced = _upsert(cur, sql_dir, d.campaign_date, d.shard, d.shards, params)
    return "upsert", written, replaced


def _write(
    conn: Connection, sql_dir: Path, d: Decisions, rules: CampaignRules, catalog: Catalog, timings: dict[str, float]
) -> dict[str, int]:
    """Stage the decisions with COPY, write offers (attach or upsert) and holdout; the caller commits."""
    t = time.perf_counter()
    with conn.cursor() as cur:
        bad_timezones = _stage(cur, sql_dir, d, rules, catalog)
        timings["write_staging"] = time.perf_counter() - t
        t = time.perf_counter()
        path, written, replaced = _write_offers(cur, sql_dir, d, _offer_params(d, rules))
        timings[f"write_{path}"] = time.perf_counter() - t
        # step 3: the holdout rows
        cur.execute(
            _sql(sql_dir, "holdout_insert"), {"run_id": d.run_id, "day": d.campaign_date, "model": d.model_version}
        )
    return {
        "offers_written": written,
        "offers_removed": replaced,
        "timezone_fallback_utc": bad_timezones,
        "write_path": path,
    }


def _render(
    renderer: Renderer, catalog: Catalog, actions: np.ndarray, categories: np.ndarray
) -> tuple[np.ndarray, list[tuple]]:
    """Render each distinct (action without timing, category) once; message id per user."""
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


def score_campaign(
    settings: Settings,
    campaign_date: dt.date,
    *,
    run_id: str | None = None,
    shard: int | None = None,
    shards: int = 1,
    dry_run: bool = False,
    model_version: str | None = None,
    rules: CampaignRules | None = None,
) -> dict[str, Any]:
    """Score one campaign date (or one shard K of N of it) and write its offers.

    Without a shard (shard None, shards 1) the run is published at the end; a shard, even 0 of 1,
    leaves publishing to `publish_run`. Returns the summary counts.
    """
    k, n = _parse_shard(shard, shards)
    rules = rules or load_rules()
    catalog = load_catalog()
    run_id = run_id or _default_run_id(campaign_date)
    url = database_url(settings)
    sql_dir = settings.sql_dir
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    renderer = Renderer(
        catalog,
        rules.templates_dir,
        fallback=rules.first_name_fallback,
        sms_max_chars=rules.sms_max_chars,
        validity_hours=rules.validity_hours,
    )
    with connect(url) as conn:
        has_features = fetch_value(conn, _sql(sql_dir, "has_features"), {"day": campaign_date})
        if not has_features:
            raise RecsysError(
                f"no features as of {campaign_date}: build them first (`recsys features --as-of {campaign_date}`)"
            )
        longest = fetch_all(conn, _sql(sql_dir, "longest_category"), {"day": campaign_date})
        categories = [r["top_category"] for r in longest]
        renderer.check_all(categories)  # template problems surface before anything is written
        version = _resolve_model(conn, sql_dir, run_id, campaign_date, model_version)
        record = get_model(conn, version)
        record.check_compatible(catalog)
        rules_json = {**rules.as_json(), "timing_delay_minutes": dict(catalog.timing_delay_minutes)}
        _start_run(conn, sql_dir, run_id, campaign_date, version, k, n, dry_run, rules_json)
        try:
            summary = _score_shard(
                conn,
                sql_dir,
                run_id,
                campaign_date,
                k,
                n,
                dry_run,
                version,
                record.artifact,
                rules,
                catalog,
                renderer,
                timings,
            )
        except BaseException as e:
            conn.rollback()
            _mark_failed(url, sql_dir, run_id, k, f"shard {k}/{n}: {e}")
            raise
    timings["total"] = time.perf_counter() - t0
    summary["timings"] = timings
    if shard is None and n == 1 and not dry_run:
        summary["publish"] = publish_run(settings, run_id)
    return summary


def _score_shard(
    conn: Connection,
    sql_dir: Path,
    run_id: str,
    campaign_date: dt.date,
    k: int,
    n: int,
    dry_run: bool,
    version: str,
    artifact: bytes,
    rules: CampaignRules,
    catalog: Catalog,
    renderer: Renderer,
    timings: dict[str, float],
) -> dict[str, Any]:
    # importing torch / SB3 and loading the model (seconds of Python) overlaps the load's COPY, which
    # waits on the server with the GIL released; "model_load" is what is left to wait for after it
    with ThreadPoolExecutor(1) as pool:
        model = pool.submit(load_sb3_model, artifact)
        t = time.perf_counter()
        users = _load(conn, sql_dir, campaign_date, rules, k, n)
        timings["load"] = time.perf_counter() - t

        t = time.perf_counter()
        user_ids = users["user_id"].to_numpy(np.int64)
        channel_ok, mask = allowed_mask(users, catalog, rules)
        reasons = skip_reasons(users, channel_ok, mask)
        eligible = reasons == ""
        policy = PPOPolicy(model.result(), catalog)
        timings["model_load"] = time.perf_counter() - t
    rows = np.flatnonzero(eligible)
    ids = user_ids[rows]
    raw = users[list(FEATURE_NAMES)].to_numpy(np.float64)[rows]
    action, propensity, explore, holdout = _decide(policy, raw, mask[rows], ids, campaign_date, rules)
    timings["score"] = time.perf_counter() - t

    t = time.perf_counter()
    categories = users["top_category"].to_numpy(object)[rows]
    message_id, messages = _render(renderer, catalog, action, categories)
    timings["render"] = time.perf_counter() - t

    counts = _shard_counts(catalog, reasons, action, explore, holdout)

    t = time.perf_counter()
    if not dry_run:
        decisions = Decisions(
            run_id=run_id,
            campaign_date=campaign_date,
            shard=k,
            shards=n,
            model_version=version,
            user_ids=ids,
            actions=action,
            propensity=propensity,
            is_exploration=explore,
            is_holdout=holdout,
            message_id=message_id,
            category_codes=users["category_code"].to_numpy()[rows],
            segment_codes=users["segment_code"].to_numpy()[rows],
            categories=users.attrs["categories"],
            segments=users.attrs["segments"],
            messages=messages,
        )
        counts.update(_write(conn, sql_dir, decisions, rules, catalog, timings))
    timings["write"] = time.perf_counter() - t
    _finish_shard(conn, sql_dir, run_id, (k, n), dry_run, counts, timings)
    return {
        "run_id": run_id,
        "campaign_date": campaign_date.isoformat(),
        "shard": k,
        "shards": n,
        "model_version": version,
        "dry_run": dry_run,
        **counts,
    }


def _finish_shard(
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
        cur.execute(_sql(sql_dir, "shard_done"), params)
        _aggregate_run(cur, sql_dir, run_id, dry_run)
    conn.commit()
    log.info(
        "run %s shard %d/%d: %d offers, %d holdout, skipped %s",
        run_id,
        k,
        n,
        counts["offers"],
        counts["holdout"],
        counts["skipped"],
    )


def _decide(
    policy: PPOPolicy, raw: np.ndarray, mask: np.ndarray, ids: np.ndarray, campaign_date: dt.date, rules: CampaignRules
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(action, propensity, is_exploration, is_holdout) per eligible user: the policy's greedy action
    on masked logits, the exploration mixture, and the holdout (greedy action logged, never sent)."""
    greedy, _ = policy.act(normalise(raw), mask)
    holdout = hashing.uniform(ids, rules.holdout_salt, "holdout") < rules.holdout_share
    action, propensity, explore = choose_actions(greedy, mask, ids, campaign_date, rules)
    action = np.where(holdout, greedy, action)
    explore &= ~holdout
    propensity = np.where(holdout, 1.0, propensity)
    return action, propensity, explore, holdout


def _shard_counts(
    catalog: Catalog, reasons: np.ndarray, action: np.ndarray, explore: np.ndarray, holdout: np.ndarray
) -> dict[str, Any]:
    """The shard's summary counts: users, eligible, offers, holdout, skips and offers by attribute."""
    acts = catalog.actions
    eligible = reasons == ""
    offered = ~holdout
    channel_of = np.array([a.channel for a in acts], dtype=object)
    type_of = np.array([a.offer_type for a in acts], dtype=object)
    timing_of = np.array([a.timing for a in acts], dtype=object)
    per_action = np.bincount(action[offered], minlength=catalog.n_actions)
    return {
        "users": len(reasons),
        "eligible": int(eligible.sum()),
        "offers": int(offered.sum()),
        "holdout": int(holdout.sum()),
        "exploration": int(explore.sum()),
        "skipped": _count(reasons[~eligible]),
        "channel": _count_by(per_action, channel_of),
        "offer_type": _count_by(per_action, type_of),
        "timing": _count_by(per_action, timing_of),
    }


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict):
            _merge(into.setdefault(key, {}), value)
        elif isinstance(value, int | float):
            into[key] = into.get(key, 0) + value


def _aggregate_run(cur: Any, sql_dir: Path, run_id: str, dry_run: bool) -> None:
    """Sum the done shards' counts and timings into the run (its row lock serialises shards)."""
    cur.execute(_sql(sql_dir, "run_row_lock"), {"run_id": run_id})
    cur.execute(_sql(sql_dir, "done_shard_totals"), {"run_id": run_id})
    counts: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    for c, t in cur.fetchall():
        _merge(counts, c)
        _merge(timings, t)
    cur.execute(
        _sql(sql_dir, "run_totals"),
        {"counts": Json(counts), "timings": Json(timings), "run_id": run_id, "dry_run": dry_run},
    )


def publish_run(settings: Settings, run_id: str) -> dict[str, Any]:
    """Make a run's offers claimable once every shard is done; re-times offers released before now.

    An offer's release is the later of its local send time and the publish moment (contract
    section 0): still-scheduled offers of the run get scheduled_at / expires_at recomputed by the
    same SQL function that wrote them, with the publish moment.
    """
    sql_dir = settings.sql_dir
    with connect(database_url(settings)) as conn, conn.cursor() as cur:
        campaign_date, rules_json = _lock_publishable(cur, sql_dir, run_id)
        send_time, validity, timings, quiet = _rules_from_json(rules_json)
        cur.execute(_sql(sql_dir, "publish_tables"))
        cur.execute(_sql(sql_dir, "publish_timezones"))
        cur.execute("analyze publish_timezones")
        execute_values(cur, "insert into publish_timings values %s", timings)
        execute_values(cur, "insert into publish_quiet values %s", quiet)
        cur.execute("select now()")
        published_at = cur.fetchone()[0]
        params = {
            "send_time": send_time,
            "now": published_at,
            "run_id": run_id,
            "day": campaign_date,
            "validity": validity,
            "published_at": published_at,
        }
        # nothing to re-time while the publish moment precedes every zone's local send time (a run
        # for a later date): skip the pass over the run's offers
        cur.execute(_sql(sql_dir, "publish_earliest_release"), params)
        earliest = cur.fetchone()[0]
        retimed = 0
        if earliest is None or published_at > earliest:
            cur.execute(_sql(sql_dir, "publish_retime"), params)
            retimed = cur.rowcount
        cur.execute(_sql(sql_dir, "run_published"), params)
        offers = fetch_value(conn, _sql(sql_dir, "run_offer_count"), params)
    return {"run_id": run_id, "published_at": published_at.isoformat(), "offers": int(offers), "retimed": retimed}


def _lock_publishable(cur: Any, sql_dir: Path, run_id: str) -> tuple[dt.date, dict[str, Any]]:
    """Lock the run and check it can be published: (campaign date, the rules it was scored with)."""
    cur.execute(_sql(sql_dir, "publish_lock"), {"run_id": run_id})
    row = cur.fetchone()
    if row is None:
        raise RecsysError(f"no campaign run {run_id!r}")
    campaign_date, shard_count, state, dry_run, rules_json = row
    if dry_run:
        raise RecsysError(f"run {run_id!r} is a dry run: it has no offers to publish")
    if state == "published":
        raise RecsysError(f"run {run_id!r} is already published")
    cur.execute(_sql(sql_dir, "done_shards"), {"run_id": run_id})
    done = {r[0] for r in cur.fetchall()}
    missing = [s for s in range(shard_count) if s not in done]
    if missing:
        raise RecsysError(
            f"run {run_id!r} cannot be published: shard(s) {', '.join(map(str, missing))} of {shard_count} are not done"
        )
    return campaign_date, rules_json
