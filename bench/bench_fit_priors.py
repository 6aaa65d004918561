"""How the response model's prior strengths move greedy-on-model's value under the truth.

A diagnosis, not a bar. On a database that `bench/bench_stage_gap.py --keep` left (one seed of the
policy benchmark's data: extracted, features built, the point-in-time features of the logged dates
built by its first fit), the response model is fitted as `train` fits it (`fit_response_model`,
the night 2026-11-01, the packaged `[learning]` config) once with the shipped prior strengths and
once per variant of `l2_main`, `l2_interaction` and `l2_prior_shrunk`; each model's greedy choice
is valued under the generator's truth (`evaluate_against_truth`, the users and allowed actions
scoring sees), paired with the shipped model's choice on the same bootstrap resamples. Each line
also shows the fit's own held-out log loss of P(open), P(click) and P(convert) (20% of the users,
`fit_report`): the evidence a shop without a truth has for choosing the strengths.

    python bench/bench_fit_priors.py --database URL --seed S [--variant MAIN,INTERACTION,SHRUNK ...]

The defaults are the variants reported in docs/decision-quality.md (measured there against the
strengths shipped before, 10 / 30 / 100, now one of the variants). Each fit takes 10 to 20 s here.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from bench_stage_gap import END

from recsys.benchmark.synth.generate import truth_path_for
from recsys.benchmark.truth_eval import evaluate_against_truth
from recsys.config import load_config
from recsys.config.settings import PROJECT_ROOT, load_settings
from recsys.data.logged_offers import fit_response_model
from recsys.db import connect
from recsys.model.baselines import ResponseGreedyPolicy

VARIANTS = ("10,30,100", "3,10,10", "10,10,10", "1,3,3", "10,10,100", "30,100,300")
"""l2_main, l2_interaction, l2_prior_shrunk (shipped: 10, 30, 10; 10, 30, 100 before 2026-12-07)."""
SHIPPED = "shipped"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", required=True, help="a database bench_stage_gap.py --keep left")
    parser.add_argument("--seed", type=int, required=True, help="the seed of that database's data")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--variant", nargs="+", default=list(VARIANTS), help="MAIN,INTERACTION,SHRUNK")
    args = parser.parse_args()
    data = PROJECT_ROOT / "data" / "bench" / f"policy_u{args.users}_d{args.days}_s{args.seed}"
    config = load_config()
    # as the policy benchmark: the seed's 108 offers, without the rest action
    config = dataclasses.replace(config, catalog=config.catalog.without_rest())
    settings = load_settings(env={}, database_url=args.database)
    learning = {SHIPPED: config.learning}
    for text in args.variant:
        main_l2, interaction, shrunk = (float(v) for v in text.split(","))
        learning[f"l2 {main_l2:g} / {interaction:g} / {shrunk:g}"] = dataclasses.replace(
            config.learning, l2_main=main_l2, l2_interaction=interaction, l2_prior_shrunk=shrunk
        )
    policies = {}
    with connect(args.database) as conn:
        for name, fit_config in learning.items():
            started = time.perf_counter()
            model = fit_response_model(
                conn, settings, config.catalog, config.reward, END, seed=args.seed, config=fit_config
            )
            held = model.fit_report.get("holdout", {})
            losses = " ".join(f"{k} {v['model']['log_loss']:.6f}" for k, v in held.items())
            print(
                f"{name:<24} fitted in {time.perf_counter() - started:4.0f} s; held-out log loss: {losses}", flush=True
            )
            policies[name] = ResponseGreedyPolicy(config.catalog, model)
        result = evaluate_against_truth(
            conn, truth_path_for(data), END, policies, catalog=config.catalog, seed=args.seed, paired_with=SHIPPED
        )
    print(f"\nseed {args.seed}: greedy on each model, normalised under the truth [95% CI]; minus shipped (paired)")
    for r in result.rows:
        if r.name in policies:
            paired = (
                ""
                if r.name == SHIPPED
                else (f"  {-r.paired_difference:+.3f} [{-r.paired_upper:+.3f}, {-r.paired_lower:+.3f}]")
            )
            print(f"  {r.name:<24} {r.normalised:.3f} [{r.normalised_lower:.3f}, {r.normalised_upper:.3f}]{paired}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
