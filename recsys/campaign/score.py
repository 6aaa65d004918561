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
from recsys.errors import RecsysError
from recsys.evaluation.registry import get_model, require_champion
from recsys.model.observation import FEATURE_NAMES, N_FEATURES, normalise
from recsys.model.policy import PPOPolicy, load_sb3_model

log = logging.getLogger(__name__)

CHANNELS = ("email", "sms", "push")
SKIP_REASONS = ("no_consent", "inactive", "cooldown", "frequency_cap")

_LOAD_SQL = """
copy (
    with recent_offers as (
        select o.user_id, o.channel
        from recsys.campaign_offers as o
        where
            o.campaign_date >= %(cap_from)s::date and o.campaign_date < %(day)s::date
            and o.status in ('scheduled', 'claimed', 'sent')
        union all
        select h.user_id, h.channel
        from recsys.offer_history as h
        where h.sent_at >= %(cap_from)s::date::timestamptz and h.sent_at < %(day)s::date::timestamptz
    ),
    offer_counts as (
        select
            user_id,
            count(*) as n_total,
            count(*) filter (where channel = 'email') as n_email,
            count(*) filter (where channel = 'sms') as n_sms,
            count(*) filter (where channel = 'push') as n_push
        from recent_offers
        group by user_id
    ),
    conversions as (
        select e.user_id
        from recsys.behavior_events as e
        where
            e.action = 'purchase'
            and e.event_at >= %(cool_from)s::date::timestamptz and e.event_at < %(day)s::date::timestamptz
        union
        select o.user_id
        from recsys.offer_events as v
        inner join recsys.campaign_offers as o on v.offer_id = o.offer_id
        where
            v.event = 'converted'
            and v.event_at >= %(cool_from)s::date::timestamptz and v.event_at < %(day)s::date::timestamptz
        union
        select h.user_id
        from recsys.offer_history as h
        where h.converted and h.sent_at >= %(cool_from)s::date::timestamptz and h.sent_at < %(day)s::date::timestamptz
    )
    select
        f.user_id,
        {features},
        (coalesce(u.email_opt_in, false))::int,
        (coalesce(u.sms_opt_in, false))::int,
        (coalesce(u.push_opt_in, false))::int,
        (coalesce(u.email_opt_in and u.email is not null and se.address is null, false))::int,
        (coalesce(u.sms_opt_in and u.phone is not null and ss.address is null, false))::int,
        (coalesce(u.push_opt_in and u.push_token is not null and sp.address is null, false))::int,
        (f.recency_days <= %(window)s)::int,
        (c.user_id is not null)::int,
        coalesce(n.n_total, 0)::int,
        coalesce(n.n_email, 0)::int,
        coalesce(n.n_sms, 0)::int,
        coalesce(n.n_push, 0)::int,
        coalesce(k.code, 0)::int,
        coalesce(g.code, 0)::int
    from recsys.user_features as f
    left join unnest(%(categories)s::text[]) with ordinality as k (top_category, code)
        on f.top_category = k.top_category
    left join unnest(%(segments)s::text[]) with ordinality as g (segment, code) on f.segment = g.segment
    left join recsys.users as u on f.user_id = u.user_id
    -- a hard-bounced address is no way to reach the user until the address changes
    left join recsys.address_suppressions as se
        on se.channel = 'email' and se.address = recsys.normalized_address('email', u.email)
    left join recsys.address_suppressions as ss
        on ss.channel = 'sms' and ss.address = recsys.normalized_address('sms', u.phone)
    left join recsys.address_suppressions as sp
        on sp.channel = 'push' and sp.address = recsys.normalized_address('push', u.push_token)
    left join offer_counts as n on f.user_id = n.user_id
    left join (select distinct user_id from conversions) as c on f.user_id = c.user_id
    where f.as_of = %(day)s and (%(shards)s = 1 or recsys.campaign_shard(f.user_id, %(shards)s) = %(shard)s)
) to stdout with (format binary)
"""


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


def _load(conn: Connection, campaign_date: dt.date, rules: CampaignRules, shard: int, shards: int) -> pd.DataFrame:
    """Every user with features as of the date (in the shard), with eligibility inputs.

    One COPY BINARY of fixed-width, non-null fields (the category as a code into the date's sorted
    categories), read by one numpy structured array: no text parsing of a million rows.
    """
    pairs = fetch_all(
        conn,
        "select top_category, segment from recsys.user_features where as_of = %s group by 1, 2",  # one hash pass
        (campaign_date,),
    )
    categories = sorted({r["top_category"] for r in pairs})
    segments = sorted({r["segment"] for r in pairs})
    # features stored as double travel as real: half the bytes, and float32 is what the policy reads
    feature_cols = ",\n        ".join(f"f.{n}::real" for n in FEATURE_NAMES[:-3])
    query = _LOAD_SQL.format(features=feature_cols)
    params = {
        "day": campaign_date,
        "cap_from": campaign_date - dt.timedelta(days=rules.cap_window_days),
        "cool_from": campaign_date - dt.timedelta(days=rules.cooldown_days),
        "window": rules.active_window_days,
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


def _resolve_model(conn: Connection, run_id: str, campaign_date: dt.date, model_version: str | None) -> str:
    """--model, else the run's model, else the date's last recorded model, else the champion."""
    if model_version:
        return get_model(conn, model_version).model_version
    recorded = fetch_value(conn, "select model_version from recsys.campaign_runs where run_id = %s", (run_id,))
    if recorded:
        return recorded
    recorded = fetch_value(
        conn,
        """
        select model_version from recsys.campaign_runs
        where campaign_date = %s and model_version is not null and not dry_run and state <> 'failed'
        order by created_at desc limit 1
        """,
        (campaign_date,),
    )
    if recorded:
        return recorded
    return require_champion(conn).model_version


def _start_run(
    conn: Connection,
    run_id: str,
    campaign_date: dt.date,
    model_version: str,
    shard: int,
    shards: int,
    dry_run: bool,
    rules_json: dict[str, Any],
) -> None:
    """Create (or join) the run and mark this shard as scoring; committed at once so it shows."""
    with conn.cursor() as cur:
        cur.execute(
            """
            insert into recsys.campaign_runs (run_id, campaign_date, model_version, dry_run, shard_count,
                features_as_of, settings)
            values (%s, %s, %s, %s, %s, %s, %s)
            on conflict (run_id) do nothing
            """,
            (run_id, campaign_date, model_version, dry_run, shards, campaign_date, Json(rules_json)),
        )
        cur.execute(
            "select campaign_date, shard_count, state, dry_run, model_version from recsys.campaign_runs "
            "where run_id = %s for update",
            (run_id,),
        )
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
        cur.execute(
            """
            insert into recsys.campaign_run_shards (run_id, shard, shard_count) values (%s, %s, %s)
            on conflict (run_id, shard) do update
            set state = 'scoring', started_at = clock_timestamp(), finished_at = null
            """,
            (run_id, shard, shards),
        )
        cur.execute("update recsys.campaign_runs set state = 'scoring', message = null where run_id = %s", (run_id,))
        if not dry_run and shards > 1:
            # shards upsert into one shared partition: DDL in this short transaction, not in the long
            # write (creating a partition locks campaign_offers exclusively, briefly)
            cur.execute("select recsys.ensure_campaign_partition(%s)", (campaign_date,))
        elif not dry_run:
            _drop_empty_partition(cur, campaign_date)
    conn.commit()


def partition_name(campaign_date: dt.date) -> str:
    """The daily campaign_offers partition's name (retention parses the date back from it)."""
    return f"campaign_offers_{campaign_date:%Y%m%d}"


def _drop_empty_partition(cur: Any, campaign_date: dt.date) -> None:
    """An empty partition of the date (left by an older version or a helper) goes, so the write can
    build the partition standalone and attach it. Dropping locks campaign_offers exclusively, so it
    happens here, in the short committed start transaction, never inside the long write."""
    part = sql.Identifier("recsys", partition_name(campaign_date))
    cur.execute("select to_regclass(%s) is not null", (f"recsys.{partition_name(campaign_date)}",))
    if cur.fetchone()[0]:
        cur.execute(sql.SQL("select exists (select from {})").format(part))
        if not cur.fetchone()[0]:
            cur.execute(sql.SQL("drop table {}").format(part))


def _mark_failed(url: str, run_id: str, shard: int, message: str) -> None:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "update recsys.campaign_run_shards set state = 'failed', finished_at = clock_timestamp() "
            "where run_id = %s and shard = %s",
            (run_id, shard),
        )
        cur.execute(
            "update recsys.campaign_runs set state = 'failed', message = %s where run_id = %s and state = 'scoring'",
            (message[:2000], run_id),
        )


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


_OFFERS_SQL = """
with staged as (
    select
        s.user_id, s.action_id, s.propensity, s.is_exploration,
        a.offer_type, a.offer_value, a.value_unit, a.channel, a.timing, a.category_offer,
        m.subject, m.body, m.is_html, m.max_chars, m.fallback_subject, m.fallback_body, m.marker_count, m.base_chars,
        c.name as top_category, g.name as segment,
        case
            when v.tz is not null then v.tz else 'UTC'
        end as tz,
        nullif(btrim(u.first_name), '') as first_name,
        sch.scheduled_at
    from stage_offers as s
    inner join stage_actions as a on s.action_id = a.action_id
    inner join stage_messages as m on s.message_id = m.message_id
    inner join stage_codes as c on c.kind = 'category' and s.category_code = c.code
    inner join stage_codes as g on g.kind = 'segment' and s.segment_code = g.code
    left join recsys.users as u on s.user_id = u.user_id
    left join stage_timezones as v on u.timezone = v.tz
    inner join stage_schedule as sch on coalesce(v.tz, 'UTC') = sch.tz and s.action_id = sch.action_id
    where not s.is_holdout
),
named as (
    select
        *,
        case
            when first_name is null then null
            when max_chars is null then first_name
            when translate(first_name, %(gsm)s, '') = ''
                and base_chars + marker_count * char_length(first_name) <= max_chars
                then first_name
        end as usable_name
    from staged
),
final as (
    select
        %(run_id)s as run_id, %(day)s::date as campaign_date, user_id, action_id, offer_type, offer_value, value_unit,
        case when category_offer then top_category end as product_category,
        channel, timing, scheduled_at,
        scheduled_at + make_interval(hours => %(validity)s) as expires_at,
        %(max_attempts)s as max_attempts,
        case
            when usable_name is null then fallback_subject
            -- subjects and titles are plain text, never html
            else replace(subject, %(marker)s, usable_name)
        end as subject,
        case
            when usable_name is null then fallback_body
            when is_html then replace(body, %(marker)s, recsys.html_escape(usable_name))
            else replace(body, %(marker)s, usable_name)
        end as body,
        %(model)s as model_version, propensity, is_exploration, %(day)s::date as features_as_of, segment
    from named
)
insert into {target} as o (
    run_id, campaign_date, user_id, action_id, offer_type, offer_value, value_unit, product_category, channel,
    timing, scheduled_at, expires_at, max_attempts, subject, body, model_version, propensity, is_exploration,
    features_as_of, segment
)
select
    run_id, campaign_date, user_id, action_id, offer_type, offer_value, value_unit, product_category, channel,
    timing, scheduled_at, expires_at, max_attempts, subject, body, model_version, propensity, is_exploration,
    features_as_of, segment
from final
"""

# a re-run, a sharded run or a date that already has offers: merge on (campaign_date, user_id)
_UPSERT_SQL = """
on conflict (campaign_date, user_id) do update
set
    run_id = excluded.run_id, action_id = excluded.action_id, offer_type = excluded.offer_type,
    offer_value = excluded.offer_value, value_unit = excluded.value_unit,
    product_category = excluded.product_category, channel = excluded.channel, timing = excluded.timing,
    scheduled_at = excluded.scheduled_at, expires_at = excluded.expires_at, max_attempts = excluded.max_attempts,
    subject = excluded.subject, body = excluded.body, model_version = excluded.model_version,
    propensity = excluded.propensity, is_exploration = excluded.is_exploration,
    features_as_of = excluded.features_as_of, segment = excluded.segment, updated_at = clock_timestamp()
where o.status = 'scheduled'
"""


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


def _attach_partition(cur: Any, campaign_date: dt.date, params: dict[str, Any]) -> int:
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
    cur.execute(
        sql.SQL(
            "create table {part} (like recsys.campaign_offers including defaults including constraints "
            "including storage including compression, "
            "constraint {check} check (campaign_date >= %(lo)s::date and campaign_date < %(hi)s::date))"
        ).format(part=part, check=sql.Identifier(f"{name}_bound")),
        bounds,
    )
    cur.execute(sql.SQL("comment on table {} is %s").format(part), (f"campaign_offers of {campaign_date}",))
    cur.execute(_OFFERS_SQL.replace("{target}", part.as_string(cur)), params)
    written = cur.rowcount
    cur.execute("set local maintenance_work_mem = '256MB'")  # the index sorts stay in memory
    cur.execute(
        sql.SQL("alter table recsys.campaign_offers attach partition {} for values from (%(lo)s) to (%(hi)s)").format(
            part
        ),
        bounds,
    )
    _attached()
    return written


def _upsert(cur: Any, campaign_date: dt.date, shard: int, shards: int, offer_params: dict[str, Any]) -> tuple[int, int]:
    """Re-runs, shards and dates that already have offers: merge into the partition; (written, removed)."""
    shard_filter = "(%(shards)s = 1 or recsys.campaign_shard(o.user_id, %(shards)s) = %(shard)s)"
    params = {"day": campaign_date, "shards": shards, "shard": shard}
    # a re-run replaces: the shard's still-scheduled offers for users who get none now go
    cur.execute(
        f"""
        delete from recsys.campaign_offers as o
        where o.campaign_date = %(day)s and o.status = 'scheduled' and {shard_filter}
          and not exists (select from stage_offers as s where s.user_id = o.user_id and not s.is_holdout)
        """,  # noqa: S608 - fixed text
        params,
    )
    replaced = cur.rowcount
    cur.execute(
        f"delete from recsys.campaign_holdout as o where o.campaign_date = %(day)s and {shard_filter}",  # noqa: S608
        params,
    )
    cur.execute(_OFFERS_SQL.replace("{target}", "recsys.campaign_offers") + _UPSERT_SQL, offer_params)
    return cur.rowcount, replaced


def _write(
    conn: Connection,
    *,
    run_id: str,
    campaign_date: dt.date,
    shard: int,
    shards: int,
    model_version: str,
    rules: CampaignRules,
    catalog: Catalog,
    user_ids: np.ndarray,
    actions: np.ndarray,
    propensity: np.ndarray,
    is_exploration: np.ndarray,
    is_holdout: np.ndarray,
    message_id: np.ndarray,
    codes: tuple[np.ndarray, np.ndarray, list[str], list[str]],
    messages: list[tuple],
    timings: dict[str, float],
) -> dict[str, int]:
    """Stage the decisions with COPY and upsert offers and holdout; the caller commits."""
    t = time.perf_counter()
    cur = conn.cursor()
    cur.execute(
        """
        create temp table stage_offers (
            user_id bigint, action_id integer, propensity double precision, is_exploration boolean,
            is_holdout boolean, message_id integer, category_code integer, segment_code integer
        ) on commit drop;
        create temp table stage_actions (
            action_id integer, offer_type text, offer_value numeric, value_unit text, channel text, timing text,
            category_offer boolean
        ) on commit drop;
        create temp table stage_messages (
            message_id integer, subject text, body text, is_html boolean, max_chars integer,
            fallback_subject text, fallback_body text, marker_count integer, base_chars integer
        ) on commit drop;
        create temp table stage_timings (timing text, delay_minutes integer) on commit drop;
        create temp table stage_codes (kind text, code integer, name text) on commit drop;
        create temp table stage_quiet (channel text, quiet_start time, quiet_end time) on commit drop;
        create temp table stage_timezones (tz text primary key) on commit drop;
        """
    )
    buffer = binary_copy(
        [
            (user_ids, ">i8"),
            (actions, ">i4"),
            (propensity, ">f8"),
            (is_exploration, "u1"),
            (is_holdout, "u1"),
            (message_id, ">i4"),
            (codes[0], ">i4"),
            (codes[1], ">i4"),
        ]
    )
    cur.copy_expert("copy stage_offers from stdin with (format binary)", buffer)
    execute_values(
        cur,
        "insert into stage_actions values %s",
        [
            (
                a.action_id,
                a.offer_type,
                a.value,
                catalog.value_units[a.offer_type],
                a.channel,
                a.timing,
                a.offer_type in catalog.category_offer_types,
            )
            for a in catalog.actions
        ],
    )
    if messages:
        execute_values(cur, "insert into stage_messages values %s", messages)
    delays, quiet = _schedule_params(catalog, rules)
    execute_values(
        cur,
        "insert into stage_codes values %s",
        [("category", k, v) for k, v in enumerate(codes[2], 1)]
        + [("segment", k, v) for k, v in enumerate(codes[3], 1)],
    )
    execute_values(cur, "insert into stage_timings values %s", delays)
    execute_values(cur, "insert into stage_quiet values %s", quiet)
    # time zone names PostgreSQL knows; anything else falls back to UTC (counted)
    cur.execute(
        """
        insert into stage_timezones select distinct name from pg_timezone_names;
        analyze stage_timezones;
        """
    )
    cur.execute(
        """
        select count(*) from stage_offers as s
        inner join recsys.users as u on s.user_id = u.user_id
        where not s.is_holdout and u.timezone not in (select tz from stage_timezones)
        """
    )
    bad_timezones = int(cur.fetchone()[0])
    for table in ("stage_offers", "stage_actions", "stage_messages", "stage_timings", "stage_quiet", "stage_codes"):
        cur.execute(sql.SQL("analyze {}").format(sql.Identifier(table)))  # the planner needs real row counts
    # sorts and hashes of a million staged rows in memory, not in temp files
    cur.execute("set local work_mem = '256MB'")
    # A fresh daily partition has no statistics yet (autovacuum has not seen it): the planner would
    # guess one row and pick nested loops over a million. Every join here is a bulk one.
    cur.execute("set local enable_nestloop = off")
    timings["write_staging"] = time.perf_counter() - t
    t = time.perf_counter()
    offer_params = {
        "day": campaign_date,
        "send_time": rules.send_time,
        "publish_at": _publish_at_scoring(),
        "validity": rules.validity_hours,
        "max_attempts": rules.max_attempts,
        "marker": MARKER,
        "gsm": GSM_BASIC,
        "run_id": run_id,
        "model": model_version,
    }
    # scheduled_at depends only on (time zone, action): computed once per pair in use, then joined
    cur.execute(
        """
        create temp table stage_schedule on commit drop as
        select z.tz, a.action_id, sch.scheduled_at
        from stage_timezones as z
        cross join stage_actions as a
        inner join stage_timings as t on a.timing = t.timing
        inner join stage_quiet as q on a.channel = q.channel
        cross join lateral recsys.offer_schedule(
            %(day)s, z.tz, %(send_time)s, %(publish_at)s, t.delay_minutes, q.quiet_start, q.quiet_end
        ) as sch
        where z.tz = 'UTC' or z.tz in (select distinct u.timezone from recsys.users as u);
        analyze stage_schedule;
        """,
        offer_params,
    )
    cur.execute("select to_regclass(%s) is null", (f"recsys.{partition_name(campaign_date)}",))
    if shards == 1 and cur.fetchone()[0]:
        path = "attach"
        cur.execute("delete from recsys.campaign_holdout where campaign_date = %s", (campaign_date,))
        written = _attach_partition(cur, campaign_date, offer_params)
        replaced = 0
        timings["write_attach"] = time.perf_counter() - t
    else:
        path = "upsert"
        written, replaced = _upsert(cur, campaign_date, shard, shards, offer_params)
        timings["write_upsert"] = time.perf_counter() - t
    cur.execute(
        """
        insert into recsys.campaign_holdout (run_id, campaign_date, user_id, action_id, offer_type, offer_value,
            channel, timing, model_version, features_as_of, segment)
        select %(run_id)s, %(day)s, s.user_id, s.action_id, a.offer_type, a.offer_value, a.channel, a.timing,
            %(model)s, %(day)s, g.name
        from stage_offers as s
        inner join stage_actions as a on s.action_id = a.action_id
        inner join stage_codes as g on g.kind = 'segment' and s.segment_code = g.code
        where s.is_holdout
        """,
        {"run_id": run_id, "day": campaign_date, "model": model_version},
    )
    cur.close()
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
        has_features = fetch_value(
            conn, "select exists (select from recsys.user_features where as_of = %s)", (campaign_date,)
        )
        if not has_features:
            raise RecsysError(
                f"no features as of {campaign_date}: build them first (`recsys features --as-of {campaign_date}`)"
            )
        categories = [
            r["top_category"]
            for r in fetch_all(
                conn,
                "select top_category from recsys.user_features where as_of = %s "
                "group by top_category order by max(char_length(top_category)) desc limit 1",
                (campaign_date,),
            )
        ]
        renderer.check_all(categories)  # template problems surface before anything is written
        version = _resolve_model(conn, run_id, campaign_date, model_version)
        record = get_model(conn, version)
        record.check_compatible(catalog)
        rules_json = {**rules.as_json(), "timing_delay_minutes": dict(catalog.timing_delay_minutes)}
        _start_run(conn, run_id, campaign_date, version, k, n, dry_run, rules_json)
        try:
            summary = _score_shard(
                conn, run_id, campaign_date, k, n, dry_run, version, record.artifact, rules, catalog, renderer, timings
            )
        except BaseException as e:
            conn.rollback()
            _mark_failed(url, run_id, k, f"shard {k}/{n}: {e}")
            raise
    timings["total"] = time.perf_counter() - t0
    summary["timings"] = timings
    if shard is None and n == 1 and not dry_run:
        summary["publish"] = publish_run(settings, run_id)
    return summary


def _score_shard(
    conn: Connection,
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
        users = _load(conn, campaign_date, rules, k, n)
        timings["load"] = time.perf_counter() - t

        t = time.perf_counter()
        user_ids = users["user_id"].to_numpy(np.int64)
        channel_ok, mask = allowed_mask(users, catalog, rules)
        reasons = skip_reasons(users, channel_ok, mask)
        eligible = reasons == ""
        policy = PPOPolicy(model.result(), catalog)
        timings["model_load"] = time.perf_counter() - t
    rows = np.flatnonzero(eligible)
    raw = users[list(FEATURE_NAMES)].to_numpy(np.float64)[rows]
    greedy, _ = policy.act(normalise(raw), mask[rows])
    ids = user_ids[rows]
    holdout = hashing.uniform(ids, rules.holdout_salt, "holdout") < rules.holdout_share
    action, propensity, explore = choose_actions(greedy, mask[rows], ids, campaign_date, rules)
    action = np.where(holdout, greedy, action)
    explore &= ~holdout
    propensity = np.where(holdout, 1.0, propensity)
    timings["score"] = time.perf_counter() - t

    t = time.perf_counter()
    categories = users["top_category"].to_numpy(object)[rows]
    message_id, messages = _render(renderer, catalog, action, categories)
    timings["render"] = time.perf_counter() - t

    acts = catalog.actions
    offered = ~holdout
    channel_of = np.array([a.channel for a in acts], dtype=object)
    type_of = np.array([a.offer_type for a in acts], dtype=object)
    timing_of = np.array([a.timing for a in acts], dtype=object)
    per_action = np.bincount(action[offered], minlength=catalog.n_actions)
    counts: dict[str, Any] = {
        "users": len(users),
        "eligible": int(eligible.sum()),
        "offers": int(offered.sum()),
        "holdout": int(holdout.sum()),
        "exploration": int(explore.sum()),
        "skipped": _count(reasons[~eligible]),
        "channel": _count_by(per_action, channel_of),
        "offer_type": _count_by(per_action, type_of),
        "timing": _count_by(per_action, timing_of),
    }

    t = time.perf_counter()
    if not dry_run:
        written = _write(
            conn,
            run_id=run_id,
            campaign_date=campaign_date,
            shard=k,
            shards=n,
            model_version=version,
            rules=rules,
            catalog=catalog,
            user_ids=ids,
            actions=action,
            propensity=propensity,
            is_exploration=explore,
            is_holdout=holdout,
            message_id=message_id,
            codes=(
                users["category_code"].to_numpy()[rows],
                users["segment_code"].to_numpy()[rows],
                users.attrs["categories"],
                users.attrs["segments"],
            ),
            messages=messages,
            timings=timings,
        )
        counts.update(written)
    timings["write"] = time.perf_counter() - t
    with conn.cursor() as cur:
        cur.execute(
            "update recsys.campaign_run_shards set state = 'done', counts = %s, timings = %s, "
            "finished_at = clock_timestamp() where run_id = %s and shard = %s",
            (Json(counts), Json(timings), run_id, k),
        )
        _aggregate_run(cur, run_id, dry_run)
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
    return {
        "run_id": run_id,
        "campaign_date": campaign_date.isoformat(),
        "shard": k,
        "shards": n,
        "model_version": version,
        "dry_run": dry_run,
        **counts,
    }


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict):
            _merge(into.setdefault(key, {}), value)
        elif isinstance(value, int | float):
            into[key] = into.get(key, 0) + value


def _aggregate_run(cur: Any, run_id: str, dry_run: bool) -> None:
    """Sum the done shards' counts and timings into the run (its row lock serialises shards)."""
    cur.execute("select 1 from recsys.campaign_runs where run_id = %s for update", (run_id,))
    cur.execute(
        "select counts, timings from recsys.campaign_run_shards where run_id = %s and state = 'done'", (run_id,)
    )
    counts: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    for c, t in cur.fetchall():
        _merge(counts, c)
        _merge(timings, t)
    cur.execute(
        """
        update recsys.campaign_runs set counts = %s, timings = %s,
            finished_at = case when (select count(*) from recsys.campaign_run_shards
                                     where run_id = %s and state = 'done') = shard_count
                          then clock_timestamp() end,
            message = case when %s then 'dry run: nothing written' else message end
        where run_id = %s
        """,
        (Json(counts), Json(timings), run_id, dry_run, run_id),
    )


def publish_run(settings: Settings, run_id: str) -> dict[str, Any]:
    """Make a run's offers claimable once every shard is done; re-times offers released before now.

    An offer's release is the later of its local send time and the publish moment (contract
    section 0): still-scheduled offers of the run get scheduled_at / expires_at recomputed by the
    same SQL function that wrote them, with the publish moment.
    """
    with connect(database_url(settings)) as conn, conn.cursor() as cur:
        cur.execute(
            "select campaign_date, shard_count, state, dry_run, settings from recsys.campaign_runs "
            "where run_id = %s for update",
            (run_id,),
        )
        row = cur.fetchone()
        if row is None:
            raise RecsysError(f"no campaign run {run_id!r}")
        campaign_date, shard_count, state, dry_run, rules_json = row
        if dry_run:
            raise RecsysError(f"run {run_id!r} is a dry run: it has no offers to publish")
        if state == "published":
            raise RecsysError(f"run {run_id!r} is already published")
        cur.execute("select shard from recsys.campaign_run_shards where run_id = %s and state = 'done'", (run_id,))
        done = {r[0] for r in cur.fetchall()}
        missing = [s for s in range(shard_count) if s not in done]
        if missing:
            raise RecsysError(
                f"run {run_id!r} cannot be published: shard(s) {', '.join(map(str, missing))} of {shard_count} "
                "are not done"
            )
        send_time, validity, timings, quiet = _rules_from_json(rules_json)
        cur.execute(
            "create temp table publish_timings (timing text, delay_minutes integer) on commit drop;"
            "create temp table publish_quiet (channel text, quiet_start time, quiet_end time) on commit drop;"
            # pg_timezone_names is a costly function scan: read it once, never per row
            "create temp table publish_timezones (tz text primary key) on commit drop;"
            "insert into publish_timezones select distinct name from pg_timezone_names;"
            "analyze publish_timezones;"
        )
        execute_values(cur, "insert into publish_timings values %s", timings)
        execute_values(cur, "insert into publish_quiet values %s", quiet)
        cur.execute("select now()")
        published_at = cur.fetchone()[0]
        # nothing to re-time while the publish moment precedes every zone's local send time (a run
        # for a later date): skip the pass over the run's offers
        cur.execute(
            "select min(recsys.offer_release(%s, tz, %s, '-infinity')) from publish_timezones",
            (campaign_date, send_time),
        )
        earliest = cur.fetchone()[0]
        retimed = 0
        if earliest is None or published_at > earliest:
            cur.execute(
                """
                with timed as (
                    select
                        o.campaign_date, o.offer_id, sch.scheduled_at
                    from recsys.campaign_offers as o
                    inner join publish_timings as t on o.timing = t.timing
                    inner join publish_quiet as q on o.channel = q.channel
                    left join recsys.users as u on o.user_id = u.user_id
                    left join publish_timezones as z on u.timezone = z.tz
                    cross join lateral recsys.offer_schedule(
                        o.campaign_date, coalesce(z.tz, 'UTC'), %(send_time)s, %(now)s, t.delay_minutes, q.quiet_start,
                        q.quiet_end
                    ) as sch
                    where o.run_id = %(run_id)s and o.campaign_date = %(day)s and o.status = 'scheduled'
                        and recsys.offer_release(o.campaign_date, coalesce(z.tz, 'UTC'), %(send_time)s, %(now)s)
                        > recsys.offer_release(o.campaign_date, coalesce(z.tz, 'UTC'), %(send_time)s, '-infinity')
                )
                update recsys.campaign_offers as o
                set scheduled_at = timed.scheduled_at,
                    expires_at = timed.scheduled_at + make_interval(hours => %(validity)s),
                    updated_at = clock_timestamp()
                from timed
                where o.campaign_date = timed.campaign_date and o.offer_id = timed.offer_id
                    and o.scheduled_at is distinct from timed.scheduled_at
                """,
                {
                    "send_time": send_time,
                    "now": published_at,
                    "run_id": run_id,
                    "day": campaign_date,
                    "validity": validity,
                },
            )
            retimed = cur.rowcount
        cur.execute(
            "update recsys.campaign_runs set state = 'published', published_at = %s, "
            "finished_at = coalesce(finished_at, clock_timestamp()) where run_id = %s",
            (published_at, run_id),
        )
        offers = fetch_value(
            conn,
            "select count(*) from recsys.campaign_offers where run_id = %s and campaign_date = %s",
            (run_id, campaign_date),
        )
    return {"run_id": run_id, "published_at": published_at.isoformat(), "offers": int(offers), "retimed": retimed}
