"""Publishing a campaign run: its offers become claimable once every shard is done.

`publish_run` is what the CLI (`recsys publish`), the nightly DAG and an unsharded
`score_campaign` call.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from psycopg2.extras import execute_values

from recsys.campaign.decide import CHANNELS
from recsys.campaign.queries import campaign_sql
from recsys.config.catalog import BEST_HOUR
from recsys.config.settings import Settings
from recsys.db import Connection, fetch_value
from recsys.errors import RecsysError


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


def _best_hour_rules(settings_json: dict[str, Any]) -> dict[str, Any]:
    """The best_hour rules a run was scored with (a run stored before they existed: the defaults)."""
    return {
        "best_default": dt.time.fromisoformat(settings_json.get("best_hour_default", "09:00")),
        "min_certainty": float(settings_json.get("best_hour_min_certainty", 1.0)),
    }


def check_moment(moment: dt.datetime | None, name: str) -> None:
    """A pinned moment must say its time zone (a naive one would be read in the server's)."""
    if moment is not None and moment.utcoffset() is None:
        raise RecsysError(f"{name} {moment.isoformat()} has no time zone: give an offset, e.g. +00:00")


def publish_run(
    conn: Connection, settings: Settings, run_id: str, *, published_at: dt.datetime | None = None
) -> dict[str, Any]:
    """Make a run's offers claimable once every shard is done; re-times offers released before now.

    An offer's release is the later of its local send time and the publish moment (contract
    section 0): still-scheduled offers of the run get scheduled_at / expires_at recomputed by the
    same SQL function that wrote them, with the publish moment: `published_at` (timezone-aware;
    benchmarks and tests pin it), else the transaction's now(). One transaction: the caller
    commits.
    """
    check_moment(published_at, "published_at")
    if conn.autocommit:
        raise RecsysError("publish_run needs a connection in a transaction, not an autocommit one")
    sql_dir = settings.sql_dir
    with conn.cursor() as cur:
        campaign_date, rules_json = _lock_publishable(cur, sql_dir, run_id)
        send_time, validity, timings, quiet = _rules_from_json(rules_json)
        cur.execute(campaign_sql(sql_dir, "publish_tables"))
        cur.execute(campaign_sql(sql_dir, "publish_timezones"))
        cur.execute("analyze publish_timezones")
        execute_values(cur, "insert into publish_timings values %s", timings)
        execute_values(cur, "insert into publish_quiet values %s", quiet)
        cur.execute("analyze publish_timings; analyze publish_quiet")
        if published_at is None:
            cur.execute("select now()")
            published_at = cur.fetchone()[0]
        params = {
            "send_time": send_time,
            "now": published_at,
            "run_id": run_id,
            "day": campaign_date,
            "validity": validity,
            "published_at": published_at,
            "best_hour": any(t == BEST_HOUR for t, _ in timings),
            **_best_hour_rules(rules_json),
        }
        if params["best_hour"]:
            cur.execute(campaign_sql(sql_dir, "publish_best_times"), params)
        cur.execute("analyze publish_best_times")
        retimed = _retime(cur, sql_dir, params)
        cur.execute(campaign_sql(sql_dir, "run_published"), params)
        offers = fetch_value(conn, campaign_sql(sql_dir, "run_offer_count"), params)
    return {"run_id": run_id, "published_at": published_at.isoformat(), "offers": int(offers), "retimed": retimed}


def _retime(cur: Any, sql_dir: Path, params: dict[str, Any]) -> int:
    """Re-time the run's still-scheduled offers whose zone's send time precedes the publish moment;
    returns how many changed.

    The schedule is computed once per (time zone, timing, channel, local send time) of the released
    zones the users are in (a run with the best_hour timing: every zone, its best_hour offers' send
    times recomputed from the features they were scored with); the update joins it with the users of
    those zones and reads the run's offers once. No zone released (a run for a later date): no pass
    over the users or the offers; none of the users in a released zone: no pass over the offers.
    """
    cur.execute(campaign_sql(sql_dir, "publish_released"), params)
    if not cur.rowcount:
        return 0
    cur.execute("analyze publish_released")
    # the date's partition was just attached and has no statistics yet: the planner would guess a
    # few rows and loop over an index per offer (minutes for 100k offers); every join here is a bulk
    # one. (JIT compiling these few expressions costs more than it saves.)
    cur.execute("set local enable_nestloop = off; set local work_mem = '256MB'; set local jit = off")
    cur.execute(campaign_sql(sql_dir, "publish_schedule"), params)
    if not cur.rowcount:
        return 0
    cur.execute("analyze publish_schedule")
    cur.execute(campaign_sql(sql_dir, "publish_retime"), params)
    return cur.rowcount


def _lock_publishable(cur: Any, sql_dir: Path, run_id: str) -> tuple[dt.date, dict[str, Any]]:
    """Lock the run and check it can be published: (campaign date, the rules it was scored with)."""
    cur.execute(campaign_sql(sql_dir, "publish_lock"), {"run_id": run_id})
    row = cur.fetchone()
    if row is None:
        raise RecsysError(f"no campaign run {run_id!r}")
    campaign_date, shard_count, state, dry_run, rules_json = row
    if dry_run:
        raise RecsysError(f"run {run_id!r} is a dry run: it has no offers to publish")
    if state == "published":
        raise RecsysError(f"run {run_id!r} is already published")
    cur.execute(campaign_sql(sql_dir, "done_shards"), {"run_id": run_id})
    done = {r[0] for r in cur.fetchall()}
    missing = [s for s in range(shard_count) if s not in done]
    if missing:
        raise RecsysError(
            f"run {run_id!r} cannot be published: shard(s) {', '.join(map(str, missing))} of {shard_count} are not done"
        )
    return campaign_date, rules_json
