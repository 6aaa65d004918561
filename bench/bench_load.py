"""Benchmark: load ~10M events for 1M users from CSV, then rebuild their features.

Bars (issue "data foundation"): load >= 100k rows/s validated and deduplicated; features for
1M users / 10M events in <= 60 s; peak memory of this Python process <= 1 GB (the work happens in
PostgreSQL). The data comes from the project's generator, run in a separate process (its memory is
not this process's) and cached under data/bench/ so later runs skip it.

    python bench/bench_load.py                  # 1M users x 28 days (about 9.8M events)
    python bench/bench_load.py --users 100000   # a quicker look

The server is RECSYS_BENCH_DATABASE_URL, else RECSYS_DATABASE_URL, else the embedded one; a scratch
database is created on it and dropped at the end (keep it with --keep).
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import subprocess
import sys
import time

from _support import bench_server, machine_speed, scratch_database
from psycopg2 import sql

from recsys.config.settings import PROJECT_ROOT, load_settings
from recsys.data.extract import load_file
from recsys.data.features import build_features
from recsys.db import connect, fetch_value
from recsys.db.migrate import migrate

END_DATE = dt.date(2026, 11, 1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def server_settings(url: str) -> str:
    with connect(url) as conn:
        names = ("server_version", "shared_buffers", "work_mem", "max_wal_size", "synchronous_commit")
        return ", ".join(f"{n}={fetch_value(conn, sql.SQL('show {}').format(sql.Identifier(n)))}" for n in names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    data = PROJECT_ROOT / "data" / "bench" / f"u{args.users}_d{args.days}_s{args.seed}"
    if not (data / "events.csv").exists():
        print(f"generating {args.users:,} users x {args.days} days into {data} ...", flush=True)
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable, "-m", "recsys", "generate-data", "--users", str(args.users), "--days", str(args.days),
                "--seed", str(args.seed), "--end-date", END_DATE.isoformat(), "--out", str(data),
            ],
            check=True,
        )  # fmt: skip
        print(f"generated in {time.perf_counter() - started:.1f} s", flush=True)

    print(machine_speed(bench_server()), flush=True)
    with scratch_database(bench_server(), "recsys_bench_load", keep=args.keep) as url:
        settings = load_settings(env={}, database_url=url)
        print(f"server: {server_settings(url)}")
        with connect(url) as conn:
            migrate(conn, settings)
        reference = dt.datetime.combine(END_DATE, dt.time(), dt.UTC)
        rows = {}
        with connect(url) as conn:
            for kind in ("users", "events", "offers"):
                path = data / f"{kind}.csv"
                result = load_file(conn, settings, path, reference_at=reference)
                if result.status != "loaded":
                    raise SystemExit(f"{path.name}: {result.describe()}")
                c = result.sheets[kind]
                rows[kind] = (c.read, result.seconds)
                print(
                    f"load {kind:<6} {c.read:>11,} rows in {result.seconds:7.1f} s = "
                    f"{c.read / result.seconds:>9,.0f} rows/s (loaded {c.loaded:,}, rejected {c.rejected:,})",
                    flush=True,
                )
        with connect(url) as conn:
            reload = load_file(conn, settings, data / "events.csv", reference_at=reference, force=True)
        print(
            f"reload events (all already present): {reload.seconds:.1f} s = "
            f"{reload.sheets['events'].read / reload.seconds:,.0f} rows/s, "
            f"added {reload.sheets['events'].loaded:,}",
            flush=True,
        )
        with connect(url) as conn:
            build = build_features(conn, settings, END_DATE)
        print(f"features as of {END_DATE}: {build.users:,} users in {build.seconds:.1f} s", flush=True)
        events, seconds = rows["events"]
        print()
        print(f"BAR load >= 100k rows/s:        {events / seconds:,.0f} rows/s")
        print(f"BAR features <= 60 s:           {build.seconds:.1f} s ({build.users:,} users)")
        print(f"BAR peak Python RSS <= 1024 MB: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
