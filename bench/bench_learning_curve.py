"""Benchmark: do the decisions improve as the system learns from its own nights? (issue 12, third bar)

Reads a database that `recsys simulate` left (`--database`, on RECSYS_BENCH_DATABASE_URL, else
RECSYS_DATABASE_URL, else the embedded server) and the simulated shop's truth file. The policy that
decided night k is the model its campaign run scored with (`recsys.campaign_runs.model_version`),
trained on the logs of the nights before k. Every listed night's policy is valued under the truth
on the same users: the users scored on each `--at` night, with that night's features, consent and
fatigue (`recsys.benchmark.truth_eval.evaluate_against_truth`). The rows are the policies' choices
among offers (`OffersOnly`: one night values a rest at exactly 0, so the rests are judged over the
horizon by `recsys simulate`, not here). Each row gets its normalised score with a 95% interval and
its paired difference from night 1's policy on the same resampled users.

    python bench/bench_learning_curve.py --database recsys_sim_1 --truth SIM_OUT/shop.truth.npz \
        [--nights 1 7 30] [--at 1 8]

Night numbers count from the simulation's first night (1 = its first campaign date). Nothing is
written to the database.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from _support import bench_server

from recsys.benchmark.truth_eval import evaluate_against_truth
from recsys.config import load_config
from recsys.db import connect, fetch_all, with_database
from recsys.evaluation.registry import get_model, load_policy
from recsys.model.baselines import OffersOnly


def campaign_models(conn) -> list[tuple[dt.date, str]]:
    """(campaign date, model version) of every campaign run, first night first."""
    rows = fetch_all(
        conn,
        "select campaign_date, min(model_version) as model_version from recsys.campaign_runs "
        "group by campaign_date order by campaign_date",
    )
    return [(r["campaign_date"], r["model_version"]) for r in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="the database `recsys simulate` wrote")
    parser.add_argument("--truth", type=Path, required=True, help="the simulated shop's truth file")
    parser.add_argument("--nights", type=int, nargs="+", default=[1, 7, 30], help="the nights whose policies to value")
    parser.add_argument("--at", type=int, nargs="+", default=[1, 8], help="the nights whose users value them")
    parser.add_argument("--config", type=Path, default=None, help="the product config the simulation ran")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    args = parser.parse_args()

    catalog = load_config(args.config).catalog
    url = with_database(bench_server(), args.database)
    with connect(url) as conn:
        runs = campaign_models(conn)
        if not runs:
            raise SystemExit(f"database {args.database!r} has no campaign runs: run `recsys simulate` first")
        wanted = [n for n in args.nights if 1 <= n <= len(runs)]
        missing = sorted(set(args.nights) - set(wanted))
        if missing:
            print(f"nights {missing} are not in the simulation ({len(runs)} nights): left out")
        if 1 not in wanted:
            wanted = [1, *wanted]
        policies = {}
        for n in wanted:
            date, version = runs[n - 1]
            record = get_model(conn, version)
            policies[f"night {n} ({date}, {record.algorithm})"] = OffersOnly(load_policy(record, catalog), catalog)
        first = next(iter(policies))
        for at in args.at:
            if not 1 <= at <= len(runs):
                print(f"--at {at}: not a night of the simulation ({len(runs)} nights): left out")
                continue
            date = runs[at - 1][0]
            result = evaluate_against_truth(
                conn, args.truth, date, policies, catalog=catalog, seed=args.seed, paired_with=first
            )
            print(f"\nUsers scored on night {at} ({date}), {result.n_users:,} users, valued under the truth:")
            print(result.table())
            for name in policies:
                row = result.row(name)
                # paired_difference is (night 1 - row): report row - night 1
                print(
                    f"  {name}: normalised {row.normalised:.3f} [{row.normalised_lower:.3f}, "
                    f"{row.normalised_upper:.3f}]; minus night 1 {-row.paired_difference:+.3f} "
                    f"[{-row.paired_upper:+.3f}, {-row.paired_lower:+.3f}]"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
