"""What every bench script shares: the server it works on and a scratch database dropped at the end.

The scripts run as `python bench/<script>.py`, which puts this folder first on `sys.path`, so they
import this module as `_support`.

The server, in this order: `RECSYS_BENCH_DATABASE_URL`; else the script's own documented default
(`bench_nightly.py`, `bench_env.py` and `bench_features.py`: the local server at 127.0.0.1:5432;
`bench_score.py`: `RECSYS_TEST_DATABASE_URL` when set); else `RECSYS_DATABASE_URL`; else the
embedded server.

`machine_speed` times two fixed probes (one in PostgreSQL, one in numpy). The same machine kind
runs them at different speeds on different days (twice as slow has been seen), so the scale
benches print them next to their results: compare runs across days by these, not by the clock.
"""

from __future__ import annotations

import os
import time

import numpy as np

from recsys.config.settings import load_settings
from recsys.db import connect, database_url, fetch_value, scratch_database

__all__ = ["LOCAL_SERVER", "bench_server", "machine_speed", "scratch_database"]

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def bench_server(default: str | None = None) -> str:
    """The server a bench script creates its scratch database on (see the module docstring)."""
    return os.environ.get("RECSYS_BENCH_DATABASE_URL") or default or database_url(load_settings())


def machine_speed(url: str) -> str:
    """The two probes' best of 3, as one line to print beside a bench's results.

    sql: one backend counts and sums 5M generated rows (no parallel workers); numpy: sort 20M
    doubles. Both are CPU-bound and touch no table, so they measure the machine, not the data.
    """
    with connect(url) as conn:
        with conn.cursor() as cur:
            cur.execute("set max_parallel_workers_per_gather = 0")
        sql_s = _best_of(3, lambda: fetch_value(conn, "select sum(i) from generate_series(1, 5000000) as i"))
    values = np.random.default_rng(0).random(20_000_000)
    numpy_s = _best_of(3, lambda: np.sort(values))
    return f"machine speed probes: sql {sql_s:.2f} s, numpy {numpy_s:.2f} s (lower is faster)"


def paired(diff: np.ndarray) -> tuple[float, float, float]:
    """Mean and normal 95% interval of a paired difference over users."""
    m = float(diff.mean())
    h = 1.96 * float(diff.std(ddof=1)) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    return m, m - h, m + h


def _best_of(n: int, work) -> float:
    best = float("inf")
    for _ in range(n):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best
