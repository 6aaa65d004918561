"""Benchmark: does the policy rest a user more when that user is fatigued? (issue 13's second bar)

`bench/bench_rests.py` compares users with each other: the users the policy rests are mostly those
it rates low, whatever their fatigue. This asks the policy about the same user twice. For one
night of a database that `recsys simulate` left (default: its last), with the model that scored
that night, every eligible user's stored features are read as scoring reads them, and the policy
decides with only the user's recent contact changed:
- fresh: no offer in the 7 days before, the last one 8 days before (`--fresh-days`; the recency
  cap, 365, is a user never sent anything);
- fatigued with K offers (`--offers`, default 1 2 3 5): K offers in the 7 days before, the last one a
  day before.

Everything else the policy sees stays as stored; the mask is the user's consent (caps and cooldown
left out, so both states offer the same actions). It prints, per state, the share of users the
policy rests (its greedy decision) and its mean probability of the rest, and per K the paired
differences over users, fatigued - fresh and K offers - 1 offer (the same user contacted once
against K times in the week), with 95% intervals (normal, on the per-user differences).
With `--truth` (the simulated shop's truth file) the difference also by tercile of the hidden
fatigue trait.

    python bench/bench_pacing.py --database recsys_sim_1 [--night 2026-12-01] [--truth SIM_OUT/shop.truth.npz]

The server is RECSYS_BENCH_DATABASE_URL, else RECSYS_DATABASE_URL, else the embedded one. Nothing
is written to the database.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
from _support import bench_server, paired

from recsys.benchmark.synth.truth import GroundTruth
from recsys.campaign.decide import allowed_mask
from recsys.campaign.load import load_users
from recsys.config import load_config
from recsys.config.settings import load_settings, package_dir
from recsys.db import connect, fetch_all, with_database
from recsys.evaluation.registry import get_model, load_policy
from recsys.model.baselines import greedy_actions
from recsys.model.observation import FEATURE_NAMES, normalise


def points(diff: np.ndarray) -> str:
    """mean [95% interval] of per-user differences, in points."""
    m, lo, hi = paired(diff)
    return f"{100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="the database `recsys simulate` wrote")
    parser.add_argument("--night", type=dt.date.fromisoformat, default=None, help="a scored night (default: the last)")
    parser.add_argument("--offers", type=int, nargs="+", default=[1, 2, 3, 5], help="offers in the 7 days before")
    parser.add_argument("--fresh-days", type=float, default=8.0, help="the fresh state's days since the last offer")
    parser.add_argument("--truth", type=Path, default=None, help="the simulated shop's truth file")
    args = parser.parse_args()

    url = with_database(bench_server(), args.database)
    settings = load_settings(env={}, database_url=url)
    config = load_config(settings.config)
    catalog = config.catalog
    # the consent only: caps and cooldown would close a fatigued state's offers and not a fresh one's
    rules = dataclasses.replace(
        config.rules, cap_total=1_000_000, cap_per_channel={}, cooldown_days=0, active_window_days=1_000_000
    )
    with connect(url) as conn:
        nights = fetch_all(
            conn,
            "select campaign_date, model_version from recsys.campaign_runs"
            " where state = 'published' and not dry_run order by campaign_date, created_at",
        )
        if not nights:
            raise SystemExit(f"database {args.database!r} has no published campaign run")
        chosen = [n for n in nights if args.night in (None, n["campaign_date"])]
        if not chosen:
            raise SystemExit(f"database {args.database!r} has no published run for {args.night}")
        night, version = chosen[-1]["campaign_date"], chosen[-1]["model_version"]
        record = get_model(conn, version)
        record.check_compatible(catalog)
        users = load_users(conn, package_dir("sql"), night, rules, 0, 1)
    policy = load_policy(record, catalog)
    _, mask = allowed_mask(users, catalog, rules)
    rows = np.flatnonzero(mask.any(axis=1))
    mask = mask[rows]
    raw = users.pop_features()[rows]
    k_col, days_col = FEATURE_NAMES.index("offers_last_7d"), FEATURE_NAMES.index("days_since_last_offer")
    rest = catalog.is_rest(np.arange(catalog.n_actions))
    probabilities = getattr(policy, "probabilities", None)
    print(f"night {night}, model {version} ({record.algorithm}), {len(rows):,} users with a consented channel")
    print(f"as stored: offers in the 7 days before {np.bincount(np.minimum(raw[:, k_col], 5).astype(int))} (0..5+)")
    if not rest.any():
        raise SystemExit("the configured catalog has no rest action")

    def ask(k: int | None) -> tuple[np.ndarray, np.ndarray]:
        state = raw.copy()
        if k is not None:  # None: as stored
            state[:, k_col] = k
            state[:, days_col] = min(args.fresh_days, settings.recency_cap_days) if k == 0 else 1.0
        obs = normalise(state)
        actions, _ = greedy_actions(policy, obs, mask)
        rested = rest[np.maximum(actions, 0)] & (actions >= 0)
        p_rest = probabilities(obs, mask)[:, rest].sum(axis=1) if callable(probabilities) else rested.astype(float)
        return rested.astype(float), p_rest

    stored, stored_p = ask(None)
    fresh, fresh_p = ask(0)
    print(f"\n{'state':<28}{'rested':>10}{'P(rest)':>10}")
    print(f"{'as stored':<28}{stored.mean():>10.1%}{stored_p.mean():>10.3f}")
    print(f"{f'fresh (0 offers, {args.fresh_days:g} days)':<28}{fresh.mean():>10.1%}{fresh_p.mean():>10.3f}")
    tired = {}
    for k in sorted({1, *args.offers}):
        tired[k] = ask(k)
        print(f"{f'fatigued ({k} offers)':<28}{tired[k][0].mean():>10.1%}{tired[k][1].mean():>10.3f}")
    once, once_p = tired[1]
    print("\nthe same users, paired (points [95% interval]):")
    for k, (rested, p_rest) in tired.items():
        line = f"  {k} offers - fresh: rested {points(rested - fresh)}; P(rest) {points(p_rest - fresh_p)}"
        if k > 1:
            line += f"   |   {k} offers - 1 offer: rested {points(rested - once)}; P(rest) {points(p_rest - once_p)}"
        print(line)
    if args.truth is not None:
        truth = GroundTruth.load(args.truth)
        trait = truth.traits.fatigue[truth.index_of(users.user_ids[rows])]
        tercile = np.searchsorted(np.quantile(trait, [1 / 3, 2 / 3]), trait, side="right")
        print("\nby tercile of the hidden fatigue trait (least / middle / most), rested K offers - 1 offer:")
        for k, (rested, _) in tired.items():
            if k > 1:
                cells = [points((rested - once)[tercile == t]) for t in range(3)]
                print(f"  {k} offers: " + " / ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
