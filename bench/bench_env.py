"""Benchmark of the offer environment and of fitting its response model.

A script, not a test. Part one steps `OfferVecEnv` with uniformly random actions (no learning,
no torch call; start states are plausible random users, since the step's cost does not depend on
their values) and prints user-steps per second for each `--envs` size. Part two (`--fit`) creates a
scratch database with a unique name, generates `--users` x `--days` of synthetic shop data with
logged offers (about 11 offers per user over 90 days), loads it, and times `fit_response_model`
twice: first with the point-in-time feature dates still to build, then with them built. It prints
the held-out fit report. The database is dropped at the end unless `--keep`. Its server is --url, by
default RECSYS_BENCH_DATABASE_URL, else the local server at 127.0.0.1:5432.

    .venv/bin/python bench/bench_env.py [--envs 4096 8192] [--steps 300] [--horizon 7]
        [--fit] [--users 28000] [--days 90] [--url postgresql://postgres@127.0.0.1:5432/postgres] [--keep]

The bar: the vectorised environment steps >= 500,000 user-steps/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _support import LOCAL_SERVER, bench_server, scratch_database

from recsys.benchmark.synth.generate import generate_data
from recsys.benchmark.toy import plausible_observations
from recsys.config.catalog import load_catalog
from recsys.config.reward import load_reward_rules
from recsys.config.settings import load_settings
from recsys.data.extract import extract_path
from recsys.data.logged_offers import fit_response_model
from recsys.db import connect
from recsys.db.migrate import migrate
from recsys.model.response import prior_response_model
from recsys.model.response_fit import FitConfig, format_fit_report
from recsys.model.vec_env import OfferVecEnv

END_DATE = dt.date(2026, 9, 1)
BAR_STEPS_PER_SECOND = 500_000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bench_steps(n_envs: int, steps: int, horizon: int) -> float:
    """User-steps per second of OfferVecEnv with random actions (best of three timed runs)."""
    catalog = load_catalog().without_rest()  # the seed's 108 offers, as measured before the rest existed
    model = prior_response_model(catalog, load_reward_rules())
    env = OfferVecEnv(model, plausible_observations(100_000, seed=1), num_envs=n_envs, horizon=horizon, seed=0)
    env.reset()
    actions = np.random.default_rng(2).integers(0, catalog.n_actions, (steps, n_envs))
    for k in range(min(20, steps)):  # warm-up
        env.step(actions[k])
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for k in range(steps):
            env.step(actions[k])
        best = max(best, steps * n_envs / (time.perf_counter() - started))
    return best


def bench_fit(server_url: str, users: int, days: int, keep: bool, caps: list[int | None]) -> None:
    with scratch_database(server_url, "recsys_bench_env", keep=keep) as url:
        with tempfile.TemporaryDirectory() as tmp:
            settings = load_settings(env={}, database_url=url, data_dir=Path(tmp))
            with connect(url) as conn:
                migrate(conn, settings)
            t0 = time.perf_counter()
            summary = generate_data(users=users, days=days, seed=7, out=Path(tmp) / "shop", end_date=END_DATE)
            with connect(url) as conn:
                extract_path(conn, settings, Path(tmp) / "shop", reference_at=dt.datetime(2026, 9, 1, tzinfo=dt.UTC))
            with connect(url, autocommit=True) as conn, conn.cursor() as cur:
                # A nightly database has had its statistics gathered long before.
                cur.execute("vacuum (analyze) recsys.offer_history")
                cur.execute("vacuum (analyze) recsys.users")
            print(
                f"\ngenerated and loaded {users:,} users x {days} days: {summary.counts['offers']:,} logged offers, "
                f"{summary.counts['events']:,} events in {time.perf_counter() - t0:.0f} s"
            )
            catalog, rules = load_catalog().without_rest(), load_reward_rules()
            runs = [("fit, building the point-in-time feature dates", FitConfig())]
            runs += [
                (f"refit, features built, at most {cap or 'all'} offers", FitConfig(max_offers=cap)) for cap in caps
            ]
            for label, config in runs:
                with connect(url) as conn:
                    started = time.perf_counter()
                    model = fit_response_model(conn, settings, catalog, rules, END_DATE, config=config)
                    seconds = time.perf_counter() - started
                report = model.fit_report
                losses = {s: round(report["holdout"][s]["model"]["log_loss"], 5) for s in ("open", "click", "convert")}
                print(
                    f"{label}: {seconds:.1f} s {json.dumps(report['seconds'])} (peak RSS {peak_rss_mb():.0f} MB); "
                    f"sample {json.dumps(report['sample'])}; held-out log loss {json.dumps(losses)}"
                )
            print(format_fit_report(model.fit_report))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", type=int, nargs="+", default=[4096, 8192], help="users stepped at once")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per run")
    parser.add_argument("--horizon", type=int, default=7, help="nights per episode")
    parser.add_argument("--fit", action="store_true", help="also time fit_response_model on generated data")
    parser.add_argument("--users", type=int, default=28_000, help="users of the generated data (--fit)")
    parser.add_argument("--days", type=int, default=90, help="days of the generated data (--fit)")
    parser.add_argument(
        "--url", default=bench_server(LOCAL_SERVER), help="the server (default: RECSYS_BENCH_DATABASE_URL, else local)"
    )
    parser.add_argument(
        "--max-offers",
        type=lambda text: None if text == "all" else int(text),
        nargs="+",
        default=[None, 100_000],
        help="refit with these bounds on the offers (`all`: unbounded) (--fit)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (prints its name)")
    args = parser.parse_args()

    # stable_baselines3 (the VecEnv base class) imports torch; stepping never calls it.
    import torch

    torch.set_num_threads(1)
    ok = True
    for n_envs in args.envs:
        rate = bench_steps(n_envs, args.steps, args.horizon)
        ok &= rate >= BAR_STEPS_PER_SECOND
        print(f"OfferVecEnv, {n_envs:,} users at once, random actions: {rate:,.0f} user-steps/s")
    print(f"bar {BAR_STEPS_PER_SECOND:,} user-steps/s: {'met' if ok else 'NOT met'}")
    if args.fit:
        bench_fit(args.url, args.users, args.days, args.keep, args.max_offers)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
