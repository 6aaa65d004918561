"""Benchmark: 8 sender processes draining 100k due offers through the sender protocol.

Bar (campaigns issue): every offer acked exactly once, none lost, none sent before `scheduled_at`,
none to a non-consented channel, none of an unpublished run; report throughput (acks/s).

The offers are written straight into campaign_offers with SQL set operations (scoring is not
measured here): N due email offers of a published run, plus offers of users whose consent was
revoked after scoring (they must be cancelled, never sent), offers not due yet, and offers of an
unpublished run (both must stay untouched). Each sender is a real `recsys send --once --adapter
jsonl` process writing its own file; every line of every file is checked against the database.

    python bench/bench_sender.py                       # 100k offers, 8 senders
    python bench/bench_sender.py --offers 20000 --senders 4

The server is RECSYS_BENCH_DATABASE_URL, else RECSYS_DATABASE_URL, else the embedded one; a scratch
database is created on it and dropped at the end (keep it with --keep).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _support import bench_server, scratch_database

from recsys.config.settings import PROJECT_ROOT, load_settings
from recsys.db import connect, fetch_all, fetch_value
from recsys.db.migrate import migrate

DAY = dt.date.today()


def populate(url: str, offers: int, revoked: int, not_due: int, unpublished: int) -> None:
    """Users and offers, all by set operations."""
    total_users = offers + revoked
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "insert into recsys.load_log (source_path, file_name, file_sha256, file_bytes, status, reference_at) "
            "values ('bench', 'bench', 'bench', 0, 'loaded', now()) returning load_id"
        )
        load_id = cur.fetchone()[0]
        cur.execute(
            """
            insert into recsys.users (user_id, email_opt_in, email, load_id, updated_at)
            select g, true, 'u' || g || '@example.com', %s, now() - interval '30 days'
            from generate_series(1, %s) as g
            """,
            (load_id, total_users + not_due),
        )
        for day in (DAY, DAY + dt.timedelta(days=1)):
            cur.execute("select recsys.ensure_campaign_partition(%s)", (day,))
        cur.execute(
            "insert into recsys.campaign_runs (run_id, campaign_date, state, published_at) values "
            "('bench-published', %s, 'published', now()), ('bench-unpublished', %s, 'scoring', null)",
            (DAY, DAY + dt.timedelta(days=1)),
        )
        insert = """
            insert into recsys.campaign_offers (
                run_id, campaign_date, user_id, action_id, offer_type, offer_value, value_unit, channel, timing,
                scheduled_at, expires_at, subject, body, propensity, is_exploration, features_as_of
            )
            select %(run)s, %(day)s, g, 1, 'discount', 10, 'percent_off', 'email', 'immediate',
                   now() + %(due)s - (g %% 3600) * interval '1 second', now() + interval '1 day',
                   'Offer', 'Hello ' || g, 0.25, false, %(day)s
            from generate_series(%(first)s::bigint, %(last)s::bigint) as g
        """
        # due: users 1..offers+revoked; not due yet: the next not_due users
        cur.execute(insert, {"run": "bench-published", "day": DAY, "due": dt.timedelta(0), "first": 1,
                             "last": total_users})  # fmt: skip
        cur.execute(insert, {"run": "bench-published", "day": DAY, "due": dt.timedelta(hours=3),
                             "first": total_users + 1, "last": total_users + not_due})  # fmt: skip
        cur.execute(insert, {"run": "bench-unpublished", "day": DAY + dt.timedelta(days=1), "due": dt.timedelta(0),
                             "first": 1, "last": unpublished})  # fmt: skip
        # consent revoked after scoring (an unsubscribe), for users spread over the due range
        cur.execute(
            "update recsys.users set email_opt_in = false where user_id > %s and user_id <= %s",
            (offers, total_users),
        )
        cur.execute("analyze recsys.campaign_offers")
        cur.execute("analyze recsys.users")


def run_senders(url: str, senders: int, batch: int) -> tuple[float, dict[str, list[int]], list[str]]:
    """`senders` `recsys send --once` processes at once: seconds, the offer ids each wrote, failures."""
    failures: list[str] = []
    out = Path(tempfile.mkdtemp(prefix="bench_sender_"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(RECSYS_DATABASE_URL=url, RECSYS_DATA_DIR=str(out), OMP_NUM_THREADS="1")
    started = time.perf_counter()
    procs = []
    for k in range(senders):
        command = [
            sys.executable, "-m", "recsys", "send", "--channel", "email", "--adapter", "jsonl", "--once",
            "--batch", str(batch), "--worker", f"bench-{k}", "--out", str(out / f"bench-{k}.jsonl"),
        ]  # fmt: skip
        procs.append(subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            failures.append(f"a sender exited with {p.returncode}: {err.strip()[-300:]}")
        else:
            print("  " + err.strip().splitlines()[-1])
    seconds = time.perf_counter() - started
    per_worker: dict[str, list[int]] = {}
    for k in range(senders):
        path = out / f"bench-{k}.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        per_worker[f"bench-{k}"] = [json.loads(line)["offer_id"] for line in lines]
    return seconds, per_worker, failures


def check_outcome(url: str, args: argparse.Namespace, per_worker: dict[str, list[int]]) -> tuple[int, list[str]]:
    """The protocol's promises checked on the database after the run: (offers acked, failed checks)."""
    counts = Counter(i for ids in per_worker.values() for i in ids)
    with connect(url) as conn:
        rows = fetch_all(
            conn,
            "select run_id, status, count(*) as n from recsys.campaign_offers group by 1, 2 order by 1, 2",
        )
        sent = {
            r["offer_id"]: r
            for r in fetch_all(
                conn,
                """
                select o.offer_id, o.claimed_by, o.attempts, o.sent_at >= o.scheduled_at as on_time,
                       u.email_opt_in as consented, o.run_id
                from recsys.campaign_offers as o join recsys.users as u using (user_id)
                where o.status = 'sent'
                """,
            )
        }
        eligible = fetch_value(
            conn,
            "select count(*) from recsys.campaign_offers as o join recsys.users as u using (user_id) "
            "where o.run_id = 'bench-published' and o.scheduled_at <= now() and u.email_opt_in",
        )
    acks = len(sent)
    print(f"status by run: {[(r['run_id'], r['status'], r['n']) for r in rows]}")
    checks = {
        "every eligible offer acked": acks == eligible == args.offers,
        "each offer written exactly once": set(counts.values()) <= {1} and len(counts) == acks,
        "written = acked": set(counts) == set(sent),
        "acked by the sender that wrote it": all(
            sent[i]["claimed_by"] == w for w, ids in per_worker.items() for i in ids if i in sent
        ),
        "none before scheduled_at": all(r["on_time"] for r in sent.values()),
        "none to a non-consented channel": all(r["consented"] for r in sent.values()),
        "none of an unpublished run": all(r["run_id"] == "bench-published" for r in sent.values()),
        "revoked ones cancelled": any(r["status"] == "cancelled" and r["n"] == args.revoked for r in rows),
        "unpublished untouched": any(
            r["run_id"] == "bench-unpublished" and r["status"] == "scheduled" and r["n"] == args.unpublished
            for r in rows
        ),
    }
    for label, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {label}")
    return acks, [label for label, ok in checks.items() if not ok]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--offers", type=int, default=100_000, help="due offers to consenting users")
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--revoked", type=int, default=2_000, help="due offers whose user revoked consent")
    parser.add_argument("--not-due", type=int, default=2_000, help="offers scheduled 3 h from now")
    parser.add_argument("--unpublished", type=int, default=5_000, help="due offers of an unpublished run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    with scratch_database(bench_server(), "recsys_bench_sender", keep=args.keep) as url:
        with connect(url) as conn:
            migrate(conn, load_settings(database_url=url))
        started = time.perf_counter()
        populate(url, args.offers, args.revoked, args.not_due, args.unpublished)
        print(f"populated {args.offers + args.revoked + args.not_due + args.unpublished:,} offers "
              f"in {time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
        seconds, per_worker, failures = run_senders(url, args.senders, args.batch)
        acks, failed_checks = check_outcome(url, args, per_worker)
        failures += failed_checks
        print(
            f"{args.senders} senders acked {acks:,} offers in {seconds:.1f} s: {acks / seconds:,.0f} acks/s "
            f"(batch {args.batch}; includes process start-up; machine: {os.cpu_count()} cores, shared)"
        )
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
