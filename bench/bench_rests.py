"""Benchmark: whom the policy rests, against the generator's hidden fatigue (issue 13's second bar).

Reads a database that `recsys simulate` left (`--database`, on RECSYS_BENCH_DATABASE_URL, else
RECSYS_DATABASE_URL, else the embedded server) and the simulated shop's truth file. From the
policy's own decisions (`recsys.campaign_decisions`: offer or rest; exploration draws, holdout and
skipped users left out) of the nights from `--first-night` on (default 8: the first week is the
policy's warm-up), it prints:
- the share of decisions that rested, per night;
- the rest share by tercile of the users' hidden fatigue trait (each user's share of rested
  decisions, averaged within the tercile), and most - least fatigued with a 95% bootstrap interval
  over users: does the policy rest fatigued users more?
- the rest share by the user's offers in the 7 nights before (what the policy observes).

    python bench/bench_rests.py --database recsys_sim_1 --truth SIM_OUT/shop.truth.npz [--first-night 8]

Nothing is written to the database.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from _support import bench_server

from recsys.benchmark.synth.truth import GroundTruth
from recsys.config.settings import package_dir
from recsys.db import connect, fetch_all, with_database
from recsys.db.sqlfiles import load_sql


def tercile_rests(per_user: pd.DataFrame, fatigue: np.ndarray, *, n_boot: int, seed: int) -> pd.DataFrame:
    """Mean rest share per tercile of `fatigue` (aligned with `per_user`'s rows), and most - least
    with a percentile bootstrap interval over users."""
    share = per_user["rested"].to_numpy(dtype=np.float64)
    cuts = np.quantile(fatigue, [1 / 3, 2 / 3])
    tercile = np.searchsorted(cuts, fatigue, side="right")
    means = [share[tercile == t].mean() for t in range(3)]
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for b in range(n_boot):  # resamples of users: n_boot x users, vectorised within each
        idx = rng.integers(0, len(share), len(share))
        s, t = share[idx], tercile[idx]
        diffs[b] = s[t == 2].mean() - s[t == 0].mean()
    low, high = np.quantile(diffs, [0.025, 0.975])
    return pd.DataFrame(
        {
            "least fatigued": [means[0]],
            "middle": [means[1]],
            "most fatigued": [means[2]],
            "most - least": [means[2] - means[0]],
            "95% CI": [f"[{low:+.3f}, {high:+.3f}]"],
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="the database `recsys simulate` wrote")
    parser.add_argument("--truth", type=Path, required=True, help="the simulated shop's truth file")
    parser.add_argument("--first-night", type=int, default=8, help="the first night counted (1 = the first)")
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    url = with_database(bench_server(), args.database)
    with connect(url) as conn:
        nights = [
            r["campaign_date"]
            for r in fetch_all(conn, "select distinct campaign_date from recsys.campaign_decisions order by 1")
        ]
        if len(nights) < args.first_night:
            raise SystemExit(
                f"database {args.database!r} has {len(nights)} nights of decisions, fewer than --first-night"
            )
        rows = fetch_all(
            conn,
            load_sql(package_dir("sql"), "benchmark/rest_decisions"),
            {"first_night": nights[args.first_night - 1]},
        )
    decisions = pd.DataFrame(rows)
    truth = GroundTruth.load(args.truth)
    print(f"{len(decisions):,} decisions (offer or rest, not explored) from {nights[args.first_night - 1]} on")

    per_night = decisions.groupby("campaign_date")["rested"].mean()
    print("\nRest share per night:")
    print(per_night.map("{:.1%}".format).to_string())

    per_user = decisions.groupby("user_id")["rested"].mean().reset_index()
    fatigue = truth.traits.fatigue[truth.index_of(per_user["user_id"].to_numpy())]
    print(f"\nRest share by tercile of the hidden fatigue trait ({len(per_user):,} users, each user's share):")
    print(
        tercile_rests(per_user, fatigue, n_boot=args.boot, seed=args.seed).to_string(
            index=False, float_format="{:.3f}".format
        )
    )

    by_history = decisions.groupby(decisions["offers_last_7_nights"].clip(upper=4))["rested"].agg(["mean", "size"])
    by_history.index = [f"{k}" if k < 4 else "4+" for k in by_history.index]
    print("\nRest share by the user's offers in the 7 nights before (what the policy observes):")
    print(
        by_history.rename(columns={"mean": "rest share", "size": "decisions"}).to_string(float_format="{:.3f}".format)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
