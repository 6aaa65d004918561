"""Benchmark: how campaign scoring's cost grows with the users (the curve).

For each size (default 100k, 300k and 1M active users) a scratch database gets that many users and
features (COPY, as in `bench_score.py`) and an untrained PPO of the production shapes; then
`score_campaign` runs once, in a child process of its own, at the nightly publish moment with the
most work (D 02:00 UTC: Tokyo's and Sydney's offers are re-timed at publish). Each stage's seconds
are printed per size, with the 15 s bar of the 1M-user night, as a table and as a Mermaid chart
(docs/performance.md shows it).

    python bench/bench_curve.py [--users 100000 300000 1000000]

Uses a scratch database per size on RECSYS_BENCH_DATABASE_URL (else RECSYS_TEST_DATABASE_URL, else
RECSYS_DATABASE_URL, else the embedded server), dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from _support import bench_server, machine_speed, scratch_database
from bench_score import DAY, default_moments, make_population, register_model, run_fast

from recsys.config.settings import load_settings
from recsys.db import connect
from recsys.db.migrate import migrate

STAGES = ("load", "score", "render", "write", "publish")
BAR_SECONDS = 15.0
"""The 1M-user bar of scoring end to end (issue "scale")."""


def measure(server: str, users: int) -> dict[str, float]:
    """Each stage's seconds and the wall time of one scoring run of `users` users."""
    with scratch_database(server, "recsys_bench_curve") as url:
        with connect(url) as conn:
            migrate(conn, load_settings(env={}, database_url=url))
        t = time.perf_counter()
        make_population(url, users, DAY)
        register_model(url)
        print(f"{users:,} users written in {time.perf_counter() - t:.1f} s", flush=True)
        fast = run_fast(url, "bench-curve", default_moments(DAY)[1], 60.0)
        if fast is None:
            raise SystemExit(f"scoring {users:,} users failed")
    timings = fast["summary"]["timings"]
    return {**{k: float(timings[k]) for k in STAGES[:-1]}, "publish": float(fast["publish"]), "wall": fast["wall"]}


def report(results: dict[int, dict[str, float]]) -> str:
    """The table and the Mermaid chart of the measured stages."""
    sizes = sorted(results)
    lines = ["| users | " + " | ".join(STAGES) + " | end to end |", "|" + " --- |" * (len(STAGES) + 2)]
    for n in sizes:
        r = results[n]
        lines.append(f"| {n:,} | " + " | ".join(f"{r[s]:.1f} s" for s in STAGES) + f" | **{r['wall']:.1f} s** |")
    labels = ", ".join(f'"{n // 1000}k"' if n < 1_000_000 else f'"{n / 1e6:g}M"' for n in sizes)
    top = max(max(r["wall"] for r in results.values()), BAR_SECONDS) * 1.1
    lines += [
        "",
        "```mermaid",
        "xychart-beta",
        '    title "Campaign scoring, seconds by users (bars: end to end; line: the 15 s bar)"',
        f"    x-axis [{labels}]",
        f'    y-axis "seconds" 0 --> {top:.0f}',
        "    bar [" + ", ".join(f"{results[n]['wall']:.1f}" for n in sizes) + "]",
        "    line [" + ", ".join(f"{BAR_SECONDS:.0f}" for _ in sizes) + "]",
        "```",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    args = parser.parse_args()
    server = bench_server(os.environ.get("RECSYS_TEST_DATABASE_URL"))
    print(machine_speed(server), flush=True)
    results = {n: measure(server, n) for n in args.users}
    print()
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
