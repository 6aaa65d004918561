"""Benchmark of the gate's horizon rollouts: what judging the rests adds to a night's training.

A script, not a test. Times `recsys.evaluation.challenger.horizon_rests`, the rollouts the gate
reads when the catalog has the rest: a toy PPO challenger of the production shapes (with its rests),
the same challenger always offering, a toy PPO champion and uniform random, each followed over
`--nights` nights in the prior response model's simulator on `--users` plausible users (the same
draws for all four), with the bootstrap intervals. Prints the seconds per run and the values.

    .venv/bin/python bench/bench_horizon.py [--users 20000] [--nights 7] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import numpy as np

from recsys.benchmark.toy import plausible_observations, toy_ppo
from recsys.config.catalog import ALLOWED_CHANNELS, load_catalog
from recsys.config.reward import load_reward_rules
from recsys.evaluation.challenger import horizon_rests
from recsys.model.observation import States
from recsys.model.policy import PPOPolicy, set_torch_threads
from recsys.model.response import prior_response_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--nights", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    set_torch_threads()
    catalog = load_catalog()
    response = prior_response_model(catalog, load_reward_rules())
    obs = plausible_observations(args.users, seed=1).astype(np.float32)
    states = States(
        as_of=dt.date(2026, 12, 1),
        user_ids=np.arange(args.users, dtype=np.int64),
        raw=obs.astype(np.float64),
        obs=obs,
        channel_ok=np.ones((args.users, len(ALLOWED_CHANNELS)), dtype=bool),
        top_category=np.full(args.users, "books", dtype=object),
    )
    challenger = PPOPolicy(toy_ppo(catalog, seed=1), catalog)
    champion = PPOPolicy(toy_ppo(catalog, seed=2), catalog)
    for run in range(args.repeat):
        started = time.perf_counter()
        h = horizon_rests(
            challenger,
            champion,
            states=states,
            response=response,
            catalog=catalog,
            horizon=(args.nights, args.users),
            seed=run,
        )
        seconds = time.perf_counter() - started
        print(
            f"run {run + 1}: {seconds:.2f} s for {h.users:,} users x {h.nights} nights x {len(h.values)} policies; "
            f"rests {h.differences['rests'].describe()}, vs champion {h.differences['vs_champion'].describe()}, "
            f"rested share {h.rest_share['challenger']:.1%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
