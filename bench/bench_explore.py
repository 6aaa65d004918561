"""What exploration gives off-policy evaluation: the uniform explorer against the softmax one.

On the decisions of a `recsys simulate` run (its database and its shop's truth), the same users,
nights and exploration share, the logging decisions are drawn again under each explorer with the
campaign's own hashes: the rule heuristic's greedy offer (the champion of a new shop), and for the
explored users an offer from the explorer (uniform over the allowed actions, or the newest PPO
challenger's softened probabilities with a uniform floor). Each logged offer gets an outcome drawn
from the generator's truth (open, click, convert, unsubscribe; the same random numbers for both
explorers, so the comparison is paired). Then, as the gate does (path a), the challenger is
compared with the rule on those logs:

- Kish's effective sample size of the challenger's importance weights, realised and expected
  ((sum E w)^2 / sum E w^2 over the logging distribution);
- the paired doubly robust difference challenger - rule (the response model of the challenger's
  night as the reward model) with its 95% percentile bootstrap interval and width;
- the true difference under the generator's truth on the same decisions.

    RECSYS_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/bench_explore.py --out data/simulate --database recsys_simulate

Nothing is written to the database. Numbers depend on the simulation run (its challenger).

`--timing N` measures instead what the explorer costs scoring: `decide` on N plausible users with
a toy PPO network of the production shapes as champion and as explorer, uniform against softmax,
three times each (no database).

    .venv/bin/python bench/bench_explore.py --timing 1000000
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
from pathlib import Path

import numpy as np
from psycopg2.extensions import make_dsn, parse_dsn

from recsys.benchmark.synth.generate import truth_path_for
from recsys.benchmark.synth.truth import GroundTruth
from recsys.campaign.decide import choose_actions
from recsys.campaign.explore import Explorer, choose_explored, softmax_exploration
from recsys.config import load_config
from recsys.config.settings import load_settings
from recsys.db import connect, database_url
from recsys.evaluation.estimators import bootstrap_estimates, estimator_specs
from recsys.evaluation.ope import load_logged_offers
from recsys.evaluation.registry import PPO, latest_model, load_policy
from recsys.model.baselines import RuleHeuristicPolicy
from recsys.model.response import ResponseModel


def logging_decisions(rule, explorer, obs, mask, users, days, rules):
    """(action, propensity, explored, mixture probabilities of the challenger's weights) per row,
    one campaign date at a time (the hashes take the date)."""
    greedy = rule.probabilities(obs, mask).argmax(axis=1)
    action = np.empty(len(obs), dtype=np.int64)
    propensity = np.empty(len(obs))
    explored = np.empty(len(obs), dtype=bool)
    for day in np.unique(days):
        rows = np.flatnonzero(days == day)
        date = dt.date.fromisoformat(str(day))
        if explorer.is_uniform:
            out = choose_actions(greedy[rows], mask[rows], users[rows], date, rules)
        else:
            out = choose_explored(greedy[rows], obs[rows], mask[rows], users[rows], date, rules, explorer)
        action[rows], propensity[rows], explored[rows] = out
    return greedy, action, propensity, explored


def exploration_matrix(explorer, obs, mask):
    if explorer.is_uniform:
        return mask / mask.sum(axis=1, keepdims=True)
    probs = explorer.policy.probabilities(obs, mask)
    return softmax_exploration(probs, mask, temperature=explorer.temperature, floor=explorer.floor)


def sampled_rewards(truth, users, actions, days, k, uniforms):
    """One outcome per decision from the truth, with the given uniforms (n, 4): the realised net value."""
    idx = truth.index_of(users)
    reward = np.empty(len(users))
    penalty = truth.params.unsubscribe_penalty
    for day in np.unique(days):
        rows = np.flatnonzero(days == day)
        r = truth.response(idx[rows], actions[rows], night=dt.date.fromisoformat(str(day)), offers_last_7d=k[rows])
        u = uniforms[rows]
        opened = u[:, 0] < r.p_open
        converted = opened & (u[:, 1] < r.p_click) & (u[:, 2] < r.p_convert)
        unsub = opened & (u[:, 3] < r.p_unsubscribe)
        reward[rows] = converted * r.net_value - r.contact_cost - penalty * unsub
    return reward


def true_difference(truth, users, days, k, challenger_probs, rule_actions):
    """Mean true value per decision of the challenger (its probabilities) minus the rule's offer."""
    out = np.empty(len(users))
    for day in np.unique(days):
        rows = np.flatnonzero(days == day)
        values = truth.value_matrix(users[rows], night=dt.date.fromisoformat(str(day)), offers_last_7d=k[rows])
        out[rows] = (challenger_probs[rows] * values).sum(axis=1) - values[np.arange(len(rows)), rule_actions[rows]]
    return float(out.mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="the simulation's --out folder (its shop's truth)")
    ap.add_argument("--database", help="the simulation's --database")
    ap.add_argument("--timing", type=int, metavar="USERS", help="time `decide` on USERS users instead")
    ap.add_argument("--since", type=dt.date.fromisoformat, help="first night (default: the first own decision)")
    ap.add_argument("--eps", type=float, default=None, help="exploration share (default: the config's)")
    ap.add_argument("--temperature", type=float, default=None)
    ap.add_argument("--floor", type=float, default=None)
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0, help="first seed of the outcome draws and the bootstrap")
    ap.add_argument("--repeats", type=int, default=20, help="outcome draws (seeds seed, seed+1, ...) per explorer")
    args = ap.parse_args(argv)
    if args.timing:
        return timing(args.timing)
    if args.out is None or args.database is None:
        ap.error("--out and --database are required (or --timing)")

    settings = load_settings()
    url = make_dsn(**{**parse_dsn(database_url(settings)), "dbname": args.database})
    config = load_config(settings.config)
    catalog = config.catalog.without_rest()  # the measured simulations ran on the seed's 108 offers
    rules = config.rules
    rules = dataclasses.replace(
        rules,
        exploration_share=args.eps if args.eps is not None else rules.exploration_share,
        exploration_temperature=args.temperature or rules.exploration_temperature,
        exploration_floor=args.floor or rules.exploration_floor,
    )
    truth = GroundTruth.load(truth_path_for(args.out / "shop"))
    with connect(url) as conn:
        record = latest_model(conn, catalog, algorithm=PPO)
        if record is None:
            print("no PPO challenger in the database: run more nights", file=sys.stderr)
            return 1
        logs = load_logged_offers(conn, catalog)
    own = (logs.rows["source"] == "campaign").to_numpy() if "source" in logs.rows else np.ones(len(logs), bool)
    days = logs.rows["features_as_of"].astype(str).to_numpy()
    if args.since is not None:
        own &= days >= args.since.isoformat()
    keep = np.flatnonzero(own & (logs.action_ids >= 0))
    obs, mask = logs.obs[keep], logs.mask[keep]
    users = logs.rows["user_id"].to_numpy(np.int64)[keep]
    days = days[keep]
    k = logs.rows["offers_last_7d"].to_numpy(np.float64)[keep]
    challenger = load_policy(record, catalog)
    response = ResponseModel.from_dict(record.response_model, catalog)
    rule = RuleHeuristicPolicy(catalog)
    target = challenger.probabilities(obs, mask)
    rule_probs = rule.probabilities(obs, mask)
    rewards_matrix = response.reward_matrix(obs)
    eps = rules.exploration_share
    print(
        f"{len(keep):,} decisions of {len(np.unique(days))} nights ({days.min()} to {days.max()}), "
        f"{len(np.unique(users)):,} users; challenger {record.model_version}; eps {eps}, "
        f"temperature {rules.exploration_temperature}, floor {rules.exploration_floor}"
    )
    truth_diff = None
    header = (
        "| explorer | Kish ESS (realised) | ESS (expected) | paired DR challenger - rule, first draw [95% CI] "
        "| mean CI width | sd of the estimate | CI covers the truth | gate path a passes |"
    )
    lines = [header, "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    rows = np.arange(len(keep))
    for explorer in (
        Explorer("uniform"),
        Explorer("softmax", rules.exploration_temperature, rules.exploration_floor, challenger, record.model_version),
    ):
        greedy, action, propensity, _ = logging_decisions(rule, explorer, obs, mask, users, days, rules)
        if truth_diff is None:
            truth_diff = true_difference(truth, users, days, k, target, greedy)
        q = exploration_matrix(explorer, obs, mask)
        mixture = (1 - eps) * np.eye(catalog.n_actions)[greedy] + eps * q
        expected_w2 = np.divide(target**2, mixture, out=np.zeros_like(target), where=mixture > 0).sum(axis=1)
        expected_ess = len(keep) ** 2 / expected_w2.sum()
        q_logged = rewards_matrix[rows, action]
        q_c = (target * rewards_matrix).sum(axis=1)
        q_r = (rule_probs * rewards_matrix).sum(axis=1)
        draws = []
        for seed in range(args.seed, args.seed + args.repeats):
            uniforms = np.random.default_rng(seed).random((len(keep), 4))
            rewards = sampled_rewards(truth, users, action, days, k, uniforms)
            spec_c = estimator_specs(rewards, target[rows, action], propensity, q_logged, q_c)
            spec_r = estimator_specs(rewards, rule_probs[rows, action], propensity, q_logged, q_r)
            diff = (spec_c["dr"][0] - spec_r["dr"][0], None, spec_c["dr"][2])
            est = bootstrap_estimates({"dr": spec_c["dr"], "diff": diff}, n_boot=args.n_boot, seed=seed, alpha=0.05)
            draws.append((est["diff"], est["dr"].effective_sample_size))
        first, ess = draws[0]
        values = np.array([d.value for d, _ in draws])
        widths = np.array([d.upper - d.lower for d, _ in draws])
        covers = np.mean([d.lower <= truth_diff <= d.upper for d, _ in draws])
        passes = np.mean([d.lower > 0 and e >= 1000 for d, e in draws])
        lines.append(
            f"| {explorer.kind} | {ess:,.0f} | {expected_ess:,.0f} "
            f"| {first.value:+.4f} [{first.lower:+.4f}, {first.upper:+.4f}] | {widths.mean():.4f} "
            f"| {values.std(ddof=1) if len(values) > 1 else float('nan'):.4f} | {covers:.0%} | {passes:.0%} |"
        )
    print("\n".join(lines))
    print(f"true difference challenger - rule on these decisions: {truth_diff:+.4f}")
    return 0


def timing(n: int) -> int:
    """Seconds of `decide` on n users, uniform against softmax exploration (a toy PPO both ways)."""
    import time

    from recsys.benchmark.toy import plausible_observations, toy_ppo
    from recsys.campaign.decide import decide
    from recsys.model.policy import PPOPolicy

    config = load_config(load_settings().config)
    catalog = config.catalog.without_rest()  # measured on the seed's 108 offers
    policy = PPOPolicy(toy_ppo(catalog, 0), catalog)
    obs = plausible_observations(n)
    mask = np.random.default_rng(0).random((n, catalog.n_actions)) < 0.7
    ids = np.arange(n)
    softmax = Explorer("softmax", config.rules.exploration_temperature, config.rules.exploration_floor, policy, "toy")
    for name, explorer in (("uniform", None), ("softmax", softmax)):
        seconds = []
        for _ in range(3):
            t = time.perf_counter()
            decide(policy, obs, mask, ids, dt.date(2026, 12, 1), config.rules, explorer)
            seconds.append(time.perf_counter() - t)
        print(f"decide, {n:,} users, {name} exploration: " + ", ".join(f"{x:.2f}" for x in seconds) + " s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
