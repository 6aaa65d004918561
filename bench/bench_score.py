"""Benchmark: campaign scoring end to end (issue "campaigns", first bar).

Fast path: `score_campaign` on 1M active users (load with COPY, consent / cap / cooldown mask,
batched PPO on masked logits, holdout and exploration hashes, rendering once per distinct input,
COPY into staging and one upsert, publish), timed and measured for peak RSS in a child process of
its own (issue 14's bar: <= 15 s on both publish paths; the campaigns issue's <= 2 GB). Naive path
on 100k users: per-user `model.predict`, per-row Jinja render and per-row INSERT; the ratio of
users/s (issue 14's bar: >= 50x, in the same run). The floor is reported beside them: the time to
binary-COPY the same finished rows (the last run's offers, and its decisions) into bare tables of
the same columns, with nothing to compute, join or index.

The clock is pinned: the fast path runs once per publish moment (`--publish-at`, each scored and
published as if it were that moment), by default two, relative to the campaign date D:
- D-1 02:00 UTC, the nightly run the night before: before every zone's 09:00 on D, nothing to
  re-time at publish;
- D 02:00 UTC, the nightly run on the night: past 09:00 in Tokyo and Sydney, so publishing re-times
  those users' offers.
Scoring takes its clock `--scoring-lag` seconds (default 60) before the publish moment, as a nightly
run scores first and publishes when done; so offers already released when scored are re-timed at
publish. Each run gets the date's partition afresh (the attach path), so the runs are comparable.

The users and their features are written directly with COPY from numpy (not the generator: 1M
generated users take minutes); the model is an untrained PPO of the production shapes (39 features,
108 actions, SB3's default 64x64 MLP, 64 learning steps): the bar is throughput, not quality. The
catalog is the seed's 108 offers without the rest action (issue 12's bars); `--rest` scores on the
configured catalog with the rest (109 actions). `--shards N` scores in N shards, each in its own
process, side by side (as the nightly DAG's mapped score tasks on N workers), then publishes once:
the end to end is from the first shard's start to the publish's end; the stage seconds are those
of the shard that finished last, the peak RSS the largest shard's.

    python bench/bench_score.py [--users 1000000] [--naive-users 100000] [--publish-at MOMENT ...]
        [--scoring-lag 60] [--rest] [--shards 1]

Uses a scratch database on RECSYS_BENCH_DATABASE_URL (else RECSYS_TEST_DATABASE_URL, else
RECSYS_DATABASE_URL, else the embedded server), dropped at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
import json
import os
import resource
import subprocess
import sys
import time
from subprocess import PIPE
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from _support import bench_server, machine_speed, scratch_database
from psycopg2 import sql

from recsys.config import load_config
from recsys.config.catalog import Catalog
from recsys.config.features import PRIOR_SHRUNK_FEATURES
from recsys.config.settings import load_settings
from recsys.data.features import partition_name
from recsys.db import connect
from recsys.db.migrate import migrate
from recsys.orchestration.airflow_local import peak_rss_bytes

DAY = dt.date(2026, 12, 1)
NAIVE_DAY = dt.date(2026, 12, 2)
TIMEZONES = ["UTC", "Europe/Berlin", "America/Los_Angeles", "Asia/Tokyo", "Australia/Sydney", "America/New_York"]
NAMES = ["Ann", "Bob", "Chloé", "Dmitri", "Eve", "<b>Frank</b>", "", "Grace", "Hiro", "Inès"]
BAR_SECONDS = 15.0  # issue 14: end to end on both publish paths
BAR_RATIO = 50.0  # issue 14: fast / naive users/s, in the same run
NAIVE_USERS = 100_000  # the naive path's sample the ratio's bar is measured on
CATEGORIES = ["books", "electronics", "home & garden", "toys", "fashion", "sports", "beauty", "grocery"]


def _copy(conn, table: str, frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, header=False, index=False)
    buffer.seek(0)
    with conn.cursor() as cur:
        cur.copy_expert(f"copy {table} ({', '.join(frame.columns)}) from stdin with (format csv)", buffer)


def make_population(url: str, n: int, day: dt.date, seed: int = 0) -> None:
    """n active users with random consent, addresses, time zones, names and features, via COPY."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1, dtype=np.int64)
    email = rng.random(n) < 0.9
    users = pd.DataFrame(
        {
            "user_id": ids,
            "email_opt_in": email,
            "sms_opt_in": rng.random(n) < 0.4,
            "push_opt_in": rng.random(n) < 0.5,
            "email": pd.Series(ids).map("u{}@example.com".format),
            "phone": "+15550000000",
            "push_token": pd.Series(ids).map("tok{}".format),
            "timezone": np.array(TIMEZONES)[rng.integers(0, len(TIMEZONES), n)],
            "first_name": np.array(NAMES)[rng.integers(0, len(NAMES), n)],
            "load_id": 1,
        }
    )
    f = {
        "as_of": day.isoformat(),
        "user_id": ids,
        "recency_days": rng.uniform(0, 60, n).round(3),
        "frequency_sessions": rng.integers(1, 50, n),
        "monetary_value": rng.gamma(2.0, 80.0, n).round(2),
    }
    for name in (
        "engagement_score",
        "discount_sensitivity",
        "free_shipping_preference",
        "email_responsiveness",
        "sms_responsiveness",
        "push_responsiveness",
        "morning_share",
        "evening_share",
        "category_focus",
    ):
        f[name] = rng.random(n).round(4)
    f.update(
        days_since_last_purchase=rng.uniform(0, 365, n).round(2),
        purchase_count=rng.integers(0, 20, n),
        offers_last_7d=rng.integers(0, 3, n),
        days_since_last_offer=rng.uniform(0, 365, n).round(2),
        top_category=np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), n)],
        r_score=3,
        f_score=3,
        m_score=3,
        segment="loyal",
    )
    for name, _, _ in PRIOR_SHRUNK_FEATURES:  # migration 013's columns, as a build since fills them
        f[name] = rng.gamma(2.0, 30.0, n).round(2) if name == "order_value" else rng.beta(2, 8, n).round(4)
    with connect(url) as conn:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("create table recsys.{} partition of recsys.user_features for values in (%s)").format(
                    sql.Identifier(partition_name(day))
                ),
                (day,),
            )
        _copy(conn, "recsys.users", users)
        _copy(conn, "recsys.user_features", pd.DataFrame(f))
        with conn.cursor() as cur:
            cur.execute("analyze recsys.users; analyze recsys.user_features")


REST_ENV = "RECSYS_BENCH_REST"
"""Set (to 1) by `--rest`, inherited by the child processes: score on the catalog with the rest."""


def bench_catalog() -> Catalog:
    """The catalog measured: the 108 offers of the seed (issue 12's bars), or with `--rest` the
    configured catalog with its rest action."""
    from recsys.config.catalog import load_catalog

    catalog = load_catalog()
    return catalog if os.environ.get(REST_ENV) == "1" else catalog.without_rest()


def register_model(url: str) -> None:
    """An untrained PPO of the production shapes, registered as the champion "bench"."""
    from recsys.benchmark.toy import toy_ppo_artifact, toy_record
    from recsys.evaluation.registry import record_decision, register

    catalog = bench_catalog()
    artifact = toy_ppo_artifact(catalog, seed=0)
    with connect(url) as conn:
        register(conn, toy_record(catalog, "bench", artifact, seed=0, trained_on=DAY, total_timesteps=64))
        record_decision(conn, "bench", decision="bootstrap", reasons=[], evaluation={})


def default_moments(day: dt.date) -> list[dt.datetime]:
    """The nightly run the night before the date (before every zone's release) and on the night
    (past the release in the zones east of UTC+7)."""
    two = dt.time(2, 0, tzinfo=dt.UTC)
    return [dt.datetime.combine(day - dt.timedelta(days=1), two), dt.datetime.combine(day, two)]


def released_zones(day: dt.date, moment: dt.datetime, send_time: dt.time = dt.time(9)) -> list[str]:
    """The population's time zones whose local send time on the date precedes the moment."""
    return [tz for tz in TIMEZONES if dt.datetime.combine(day, send_time, ZoneInfo(tz)) < moment]


def moment_arg(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    if moment.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone: give an offset, e.g. 2026-12-01T02:00+00:00")
    return moment


def child_fast(url: str, run_id: str, moment: dt.datetime, lag: float, shard: int = 0, shards: int = 1) -> None:
    """The measured fast path at a pinned moment, alone in this process: prints a JSON line.

    Shard 0 of 1 then `publish_run`: what the unsharded `score_campaign` does, with the publish timed.
    With `shards` > 1, shard `shard` only, without the publish (the parent publishes once every
    shard's process is done). Scoring's clock is `lag` seconds before the publish moment."""
    from recsys.campaign import publish_run, score_campaign

    settings = load_settings(env={}, database_url=url)
    config = dataclasses.replace(load_config(settings.config), catalog=bench_catalog())
    scored_at = moment - dt.timedelta(seconds=lag)
    with connect(url) as conn:
        t = time.perf_counter()
        summary = score_campaign(
            conn, settings, DAY, config=config, run_id=run_id, shard=shard, shards=shards, publish_at=scored_at
        )
        p = time.perf_counter()
        if shards == 1:
            summary["publish"] = publish_run(conn, settings, run_id, published_at=moment)
        conn.commit()
        end = time.perf_counter()
    peak = own_peak_rss()
    report = {"wall": end - t, "publish": end - p, "peak": peak, "load": os.getloadavg()[0], "summary": summary}
    print(json.dumps(report, default=str))


def own_peak_rss() -> int:
    """This process's own peak RSS in bytes (VmHWM, see `peak_rss_bytes`), else its ru_maxrss."""
    return peak_rss_bytes() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_fast(url: str, run_id: str, moment: dt.datetime, lag: float, shards: int = 1) -> dict | None:
    """The fast path in child processes (one per shard, side by side) on a fresh night: the date
    without offers and without recorded decisions (both its partitions dropped first: a run after
    the first would otherwise replace the first's million, a re-run, which costs more, not the
    nightly case measured). With shards, the parent publishes once every shard is done."""
    with connect(url) as conn, conn.cursor() as cur:
        for table in ("campaign_offers", "campaign_decisions"):
            cur.execute(sql.SQL("drop table if exists recsys.{}").format(sql.Identifier(f"{table}_{DAY:%Y%m%d}")))
    command = [sys.executable, __file__, *("--child-fast", url, "--child-run", run_id)]
    command += [*("--publish-at", moment.isoformat(), "--scoring-lag", str(lag), "--shards", str(shards))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    procs = [
        subprocess.Popen([*command, "--child-shard", str(k)], stdout=PIPE, stderr=PIPE, text=True, env=env)
        for k in range(shards)
    ]
    outputs = [proc.communicate() for proc in procs]
    if any(proc.returncode != 0 for proc in procs):
        for (_, err), proc in zip(outputs, procs, strict=True):
            if proc.returncode != 0:
                print(err, file=sys.stderr)
        return None
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    if shards == 1:
        return reports[0]
    from recsys.campaign import publish_run

    p = time.perf_counter()
    with connect(url) as conn:
        published = publish_run(conn, load_settings(env={}, database_url=url), run_id, published_at=moment)
        conn.commit()
    end = time.perf_counter()
    summary = {k: sum(r["summary"][k] for r in reports) for k in ("users", "offers", "holdout", "exploration")}
    slowest = max(reports, key=lambda r: r["wall"])["summary"]
    summary.update(
        timings=slowest["timings"],  # the stages of the shard that finished last
        skipped=reports[0]["summary"]["skipped"],
        write_path=" + ".join(r["summary"].get("write_path", "?") for r in reports),
        publish=published,
    )
    peak = max(r["peak"] for r in reports)
    return {"wall": end - started, "publish": end - p, "peak": peak, "load": os.getloadavg()[0], "summary": summary}


def copy_floor(url: str) -> dict[str, float]:
    """The floor under the write: binary COPY of the date's finished rows (the last fast run's offers
    and decisions, read out first, untimed) into bare tables of the same columns, committed."""
    out: dict[str, float] = {}
    with connect(url) as conn, conn.cursor() as cur:
        for table in ("campaign_offers", "campaign_decisions"):
            rows = io.BytesIO()
            query = sql.SQL("copy (select * from recsys.{} where campaign_date = {}) to stdout with (format binary)")
            cur.copy_expert(query.format(sql.Identifier(table), sql.Literal(DAY)).as_string(conn), rows)
            floor = sql.Identifier(f"floor_{table}")
            cur.execute(sql.SQL("create table {} (like recsys.{})").format(floor, sql.Identifier(table)))
            conn.commit()
            rows.seek(0)
            started = time.perf_counter()
            cur.copy_expert(sql.SQL("copy {} from stdin with (format binary)").format(floor).as_string(conn), rows)
            count = cur.rowcount
            conn.commit()
            out[table.removeprefix("campaign_")] = time.perf_counter() - started
            out[f"{table.removeprefix('campaign_')[:-1]}_rows"] = count
            cur.execute(sql.SQL("drop table {}").format(floor))
            conn.commit()
    return out


def fast_rows(users: int, moment: dt.datetime, fast: dict) -> list[tuple[str, str, str]]:
    """The report's rows of one fast run."""
    s = fast["summary"]
    timings = s["timings"]
    zones = released_zones(DAY, moment)
    return [
        (f"publish at {moment:%Y-%m-%d %H:%M %Z}", "", f"released: {', '.join(zones) or 'no zone yet'}"),
        ("  offers written / holdout / explored", f"{s['offers']:,} / {s['holdout']:,} / {s['exploration']:,}", ""),
        (
            "  stage seconds: load / score / render / write",
            " / ".join(f"{timings[k]:.1f}" for k in ("load", "score", "render", "write")),
            "",
        ),
        (
            "  stage seconds: model load / staging / upsert / attach / decisions",
            " / ".join(
                f"{sum(timings.get(k, 0) for k in keys):.1f}"
                for keys in (
                    ("model_load",),
                    ("write_staging",),
                    ("write_upsert",),
                    ("write_attach", "write_attach_shard"),
                    ("write_decisions",),
                )
            ),
            f"write path: {s.get('write_path')}",
        ),
        ("  publish", f"{fast['publish']:.1f} s", f"offers re-timed: {s['publish']['retimed']:,}"),
        ("  fast path, end to end incl. publish", f"{fast['wall']:.1f} s", f"bar <= {BAR_SECONDS:.0f} s"),
        ("  fast path peak RSS (its own process)", f"{fast['peak'] / 2**30:.2f} GB", "bar <= 2 GB"),
        ("  load average (1 min) at its end", f"{fast['load']:.1f}", f"{os.cpu_count()} cores"),
        ("  fast path users/s", f"{users / fast['wall']:,.0f}", ""),
    ]


def naive(url: str, n: int) -> tuple[float, int]:
    """Per-user predict, per-row render, per-row INSERT on the first n users: (seconds, rows)."""
    from recsys.campaign.messages import PARTS, UNSUBSCRIBE_MARKER, environment, offer_text, validity_text
    from recsys.config.rules import load_rules
    from recsys.data.states import load_states
    from recsys.evaluation.registry import get_model
    from recsys.model.policy import load_sb3_model

    catalog = bench_catalog()
    actions = catalog.actions
    rules = load_rules()
    env = environment(rules.templates_dir)
    with connect(url) as conn:
        model = load_sb3_model(get_model(conn, "bench").artifact)
        states = load_states(conn, DAY, np.arange(1, n + 1))
        with conn.cursor() as cur:
            cur.execute("select recsys.ensure_campaign_partition(%s)", (NAIVE_DAY,))
            cur.execute("select user_id, coalesce(first_name, '') from recsys.users where user_id <= %s", (n,))
            first = dict(cur.fetchall())
        conn.commit()
        t = time.perf_counter()
        with conn.cursor() as cur:
            for i in range(len(states)):
                action, _ = model.predict(states.obs[i], deterministic=True)
                a = actions[int(action)]
                category = str(states.top_category[i])
                unit = catalog.value_units.get(a.offer_type, "")
                context = {
                    "first_name": first.get(int(states.user_ids[i])) or "there",
                    "offer_type": a.offer_type,
                    "value": f"{a.value:g}",
                    "value_unit": unit,
                    "offer_text": offer_text(unit, a.value, category),
                    "category": category,
                    "channel": a.channel,
                    "validity_hours": rules.validity_hours,
                    "validity": validity_text(rules.validity_hours),
                    "unsubscribe_url": UNSUBSCRIBE_MARKER,
                }
                parts = {
                    part: env.get_template(f"{a.channel}/{a.offer_type}.{part}.{ext}.j2").render(context)
                    for part, ext in PARTS[a.channel]
                }
                now = dt.datetime.now(dt.UTC)
                cur.execute(
                    "insert into recsys.campaign_offers (run_id, campaign_date, user_id, action_id, offer_type, "
                    "offer_value, value_unit, channel, timing, scheduled_at, expires_at, body, subject, propensity, "
                    "is_exploration, features_as_of) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                    "%s, %s, %s)",
                    (
                        "bench-naive",
                        NAIVE_DAY,
                        int(states.user_ids[i]),
                        a.action_id,
                        a.offer_type,
                        a.value,
                        unit,
                        a.channel,
                        a.timing,
                        now,
                        now + dt.timedelta(hours=rules.validity_hours),
                        parts["body"],
                        parts.get("subject"),
                        1.0,
                        False,
                        DAY,
                    ),
                )
        conn.commit()
        return time.perf_counter() - t, len(states)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--naive-users", type=int, default=NAIVE_USERS)
    parser.add_argument(
        "--publish-at",
        type=moment_arg,
        nargs="+",
        default=default_moments(DAY),
        metavar="MOMENT",
        help=f"publish moments, ISO with an offset; one fast run each (default: 02:00 UTC on {DAY} and the day before)",
    )
    parser.add_argument(
        "--scoring-lag", type=float, default=60.0, help="seconds from scoring's clock to the publish moment"
    )
    parser.add_argument("--child-fast", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-run", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-shard", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--shards", type=int, default=1, help="score in this many shards, each in its own process, side by side"
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database (to inspect it)")
    parser.add_argument(
        "--rest", action="store_true", help="score on the catalog with the rest action (default: the 108 offers)"
    )
    args = parser.parse_args()
    if args.rest:
        os.environ[REST_ENV] = "1"
    if args.child_fast:
        child_fast(args.child_fast, args.child_run, args.publish_at[0], args.scoring_lag, args.child_shard, args.shards)
        return 0

    server = bench_server(os.environ.get("RECSYS_TEST_DATABASE_URL"))
    print(machine_speed(server), flush=True)
    with scratch_database(server, "recsys_bench_score", keep=args.keep_db) as url:
        with connect(url) as conn:
            migrate(conn, load_settings(env={}, database_url=url))
        t = time.perf_counter()
        make_population(url, args.users, DAY)
        register_model(url)
        print(f"setup: {args.users:,} users and features written with COPY in {time.perf_counter() - t:.1f} s")

        runs = []
        for i, moment in enumerate(args.publish_at):
            fast = run_fast(url, f"bench-fast-{i}", moment, args.scoring_lag, args.shards)
            if fast is None:
                return 1
            runs.append((moment, fast))
        naive_seconds, naive_rows = naive(url, args.naive_users)

        naive_rate = naive_rows / naive_seconds
        s = runs[0][1]["summary"]
        rows = [("users scored", f"{s['users']:,}", f"in {args.shards} shard(s), one process each")]
        for moment, fast in runs:
            rows += fast_rows(args.users, moment, fast)
        # the naive rate moves with its sample's size (per-row INSERTs into a growing table), so only
        # a sample of the default size is compared with the bar
        small = naive_rows < NAIVE_USERS
        note = f"a sample under {NAIVE_USERS:,} users: not comparable with the bar" if small else ""
        rows.append((f"naive path on {naive_rows:,} users", f"{naive_seconds:.1f} s ({naive_rate:,.0f} users/s)", note))
        for moment, fast in runs:
            ratio = args.users / fast["wall"] / naive_rate
            label = f"ratio fast / naive (users/s), publish at {moment:%m-%d %H:%M}"
            rows.append((label, f"{ratio:.0f}x", "(not compared)" if small else f"bar >= {BAR_RATIO:.0f}x"))
        floor = copy_floor(url)
        rows.append(
            (
                "floor: bare binary COPY of the same rows",
                f"{floor['offers']:.1f} s + {floor['decisions']:.1f} s",
                f"{floor['offer_rows']:,} offers + {floor['decision_rows']:,} decisions, no index",
            )
        )
        width = max(len(r[0]) for r in rows)
        print(f"\n{'measure':<{width}}  {'value':>28}  note")
        for label, value, note in rows:
            print(f"{label:<{width}}  {value:>28}  {note}")
        print(f"\nmessages rendered: {s['offers']:,} offers from the templates; skipped: {s['skipped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
