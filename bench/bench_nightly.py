"""Benchmark: the real `recsys_nightly` DAG, timed per task, with its peak memory (issue 14's bars:
the fine-tune night of 100k users in at most 3 minutes; of 1M users x 28 days in at most 15 minutes
and 4 GB).

A fine-tune needs a champion, so the first night retrains (not timed against the bar), then the
next night fine-tunes the champion: that second run is the nightly job the bar is about. The
behaviour (CSV, as a data team drops it) arrives in the inbox before the first night; the second
night finds the inbox empty and rebuilds features, trains, scores and publishes for its date.
Both runs go through `dag.test()` in a fresh process (`python -m recsys.orchestration.airflow_local`), with
Airflow metadata in SQLite in a temporary folder and the campaign database in a scratch database
on `RECSYS_BENCH_DATABASE_URL` (default: the local server at 127.0.0.1:5432; unlike the other
scripts, it does not fall back to `RECSYS_DATABASE_URL`).

    python bench/bench_nightly.py [--users 100000] [--days 90] [--timesteps 200000] [--shards 2]
        [--logs DIR] [--keep DIR]

Each night's log (each task's log lines, its seconds included) goes to
`--logs` (default data/bench/nightly), kept after the run's temporary folder is gone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _support import LOCAL_SERVER, bench_server, machine_speed, scratch_database

from recsys.benchmark.synth.generate import generate_data
from recsys.db import airflow_connection


def night(home: Path, url: str, inbox: Path, date: dt.date, conf: dict, logs: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS_"))}
    env.update(
        AIRFLOW_CONN_RECSYS_DB=airflow_connection(url),
        RECSYS_INBOX=str(inbox),
        RECSYS_DATA_DIR=str(home / "data"),
        RECSYS_NIGHTLY_RETRIES="0",
        RECSYS_INBOX_SETTLE_SECONDS="0",  # the files are complete before the first night starts
        OMP_NUM_THREADS="1",
    )
    command = [sys.executable, "-m", "recsys.orchestration.airflow_local", "--home", str(home / "airflow")]
    command += ["--date", f"{date.isoformat()}T02:00:00+00:00", "--conf", json.dumps(conf)]
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"night-{date}-{conf['mode']}.log"
    log.write_text(proc.stdout + proc.stderr)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"night {date}: no result; see {log}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    result["wall_seconds"] = wall
    return result


def table(result: dict) -> str:
    rows = [f"  {'task':<18}{'seconds':>9}"]
    for t in result["tasks"]:
        name = t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else "")
        rows.append(f"  {name:<18}{t['seconds']:>9.1f}  {t['state']}")
    total = sum(t["seconds"] for t in result["tasks"])
    rows.append(f"  {'sum of tasks':<18}{total:>9.1f}")
    rows.append(f"  {'wall (process)':<18}{result['wall_seconds']:>9.1f}  run {result['state']}")
    rows.append(f"  {'peak RSS (GB)':<18}{result.get('peak_rss_bytes', 0) / 2**30:>9.2f}  the night's process")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--timesteps", type=int, default=200_000, help="PPO steps of each night")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--logs", type=Path, default=Path("data/bench/nightly"), help="where each night's log goes")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the scratch database, and the nights' folder (Airflow home, data, inbox) in DIR",
    )
    args = parser.parse_args()

    day1 = dt.date.today() + dt.timedelta(days=1)
    day2 = day1 + dt.timedelta(days=1)
    server = bench_server(LOCAL_SERVER)
    print(machine_speed(server), flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="bench-nightly-", ignore_cleanup_errors=True) as folder,
        scratch_database(server, "recsys_bench_nightly", keep=args.keep is not None) as url,
    ):
        work = Path(folder) if args.keep is None else args.keep.resolve()
        if args.keep is not None:
            work.mkdir(parents=True, exist_ok=True)
            print(f"keeping the database {url.rsplit('/', 1)[-1]} and the nights' folder {work}")
        started = time.perf_counter()
        shop = work / "shop"
        summary = generate_data(users=args.users, days=args.days, seed=args.seed, out=shop, end_date=day1)
        print(f"generated {summary.counts} in {time.perf_counter() - started:.1f} s")
        inbox = work / "inbox"
        inbox.mkdir()
        for f in shop.glob("*.csv"):
            shutil.copy2(f, inbox / f.name)

        conf = {"mode": "retrain", "total_timesteps": args.timesteps, "shards": args.shards}
        first = night(work, url, inbox, day1, conf, args.logs)
        print(f"\nnight 1 ({day1}, retrain, {args.users:,} users):\n{table(first)}")
        conf = {"mode": "fine_tune", "total_timesteps": args.timesteps, "shards": args.shards}
        second = night(work, url, inbox, day2, conf, args.logs)
        print(f"\nnight 2 ({day2}, fine_tune, {args.users:,} users):\n{table(second)}")
        limit = 180 if args.users <= 100_000 else 900
        ok = second["state"] == "success" and second["wall_seconds"] <= limit
        wall = second["wall_seconds"]
        print(f"\nbar: the fine-tune night in <= {limit} s: {'met' if ok else 'NOT met'} ({wall:.0f} s)")
        if args.users > 100_000:
            peak = second.get("peak_rss_bytes", 0) / 2**30
            print(f"bar: its peak RSS <= 4 GB: {'met' if peak <= 4 else 'NOT met'} ({peak:.2f} GB)")
        return 0 if second["state"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
