"""Benchmark of `recsys generate-data`: how long 100k users over 90 days take to write as CSV.

A script, not a test. It generates into a scratch folder (deleted afterwards unless --keep), then
prints the rows per table, the seconds, the rows per second and this process's peak RSS.

    .venv/bin/python bench/bench_generate.py [--users 100000] [--days 90] [--seed 7]
        [--end-date 2026-09-01] [--xlsx] [--keep DIR]

The bar: 100k users x 90 days to CSV well under a minute on a 2-core machine (target < 30 s), and
1M users within a few GB of memory (`--users 1000000 --days 28` gives about 10M events).
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shutil
import tempfile
import time
from pathlib import Path

from recsys.benchmark.synth.generate import generate_data, truth_path_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=dt.date(2026, 9, 1))
    parser.add_argument("--xlsx", action="store_true", help="write one .xlsx workbook instead of CSV")
    parser.add_argument("--keep", type=Path, help="write here and keep the output")
    args = parser.parse_args()

    scratch = None
    if args.keep:
        base = args.keep
    else:
        scratch = Path(tempfile.mkdtemp(prefix="bench_generate_"))
        base = scratch
    out = base / ("sample.xlsx" if args.xlsx else "data")
    try:
        started = time.perf_counter()
        summary = generate_data(users=args.users, days=args.days, seed=args.seed, out=out, end_date=args.end_date)
        seconds = time.perf_counter() - started
        rows = sum(summary.counts.values())
        size = sum(p.stat().st_size for p in set(summary.paths.values()))
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(summary.format_report())
        print(
            f"{args.users:,} users x {args.days} days -> {'xlsx' if args.xlsx else 'CSV'}: "
            + ", ".join(f"{k} {v:,}" for k, v in summary.counts.items())
        )
        print(f"rows {rows:,} in {seconds:.1f} s ({rows / seconds:,.0f} rows/s), {size / 2**20:,.0f} MiB written")
        print(f"truth {truth_path_for(out).stat().st_size / 2**20:,.1f} MiB; peak RSS {peak_mib:,.0f} MiB")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
