"""Where greedy on the response model loses value: each stage of the model against the generator's truth.

A diagnosis, not a bar. Per seed, on the policy benchmark's data (`generate-data` with 20k users x
90 days, the folder `data/bench/policy_u{users}_d{days}_s{seed}` that bench/bench_policy.py makes
and reuses): extract, build the features of the night before the end date and of the end date (as
bench_policy.py does), fit the response model as `train` does (`fit_response_model`: the logged
offers of the fit's window, the night's seed, the packaged `[learning]` config), then, on the users
and allowed actions `evaluate_against_truth` values (`load_states` of the end date, their action
mask, the truth on that night with each user's offers of the previous 7 days):

1. per stage, P(open), P(click | open), P(convert | click), P(unsubscribe | open) and the net value
   of a conversion (margin on the order after the offer's cost), the model's against the truth's:
   the correlation over every allowed (user, action), the calibration ratio mean(model) /
   mean(truth), and the mean over users of the correlation across a user's allowed actions
   (what the greedy choice reads). The model's click, convert and net are conditional on the
   previous stage given the observation (those who open are the users likelier to click), the
   truth's are each user's own, so their ratios are not calibration; P(convert), the product of
   the first three, and the value are;
2. stage substitution: greedy on the model's expected value with one stage replaced by the
   truth's ("truth <stage>"), and greedy on the truth's with one stage left as the model's
   ("model <stage> only"), each valued under the truth next to greedy on the model and the
   oracle: the normalised value (value - random) / (oracle - random) of `evaluate_against_truth`,
   with its 95% bootstrap interval;
3. how often the greedy choice's channel, timing, offer type and value agree with the oracle's;
4. with `--posterior`, the same against the posterior ceiling of bench/bench_policy.py instead of
   the truth: each stage's posterior mean (`recsys.benchmark.posterior.posterior_stages`, from the
   same logs, the generator's form and priors known), its correlation with the truth next to the
   model's, and greedy on the model with one stage (or one stage of one offer type) replaced by the
   posterior's, and on the posterior with one stage left as the model's: which stages, and which
   offer types, hold what the ceiling keeps over the model.

    python bench/bench_stage_gap.py [--seeds 3 1] [--users 20000] [--days 90] [--posterior] [--keep]
        [--database URL]

Each seed works in a scratch database on RECSYS_BENCH_DATABASE_URL, else RECSYS_DATABASE_URL, else
the embedded server, dropped at its end; `--keep` keeps it (its name is printed) and `--database URL`
reuses such a database (one seed: the data is already extracted and its features built), so that
a change of the model's form is measured in minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import time
from contextlib import nullcontext

import numpy as np
from _support import bench_server, scratch_database

from recsys.benchmark.posterior import posterior_stages
from recsys.benchmark.posterior_logs import load_observed
from recsys.benchmark.synth.generate import generate_data, truth_path_for
from recsys.benchmark.synth.truth import GroundTruth
from recsys.benchmark.truth_eval import evaluate_against_truth
from recsys.config import load_config
from recsys.config.settings import PROJECT_ROOT, load_settings
from recsys.data.extract import extract_path
from recsys.data.features import build_features
from recsys.data.logged_offers import fit_response_model
from recsys.data.states import load_states
from recsys.db import connect
from recsys.db.migrate import migrate
from recsys.model.baselines import ResponseGreedyPolicy
from recsys.model.observation import FEATURE_NAMES

END = dt.date(2026, 11, 1)
STAGES = ("open", "click", "convert", "unsubscribe", "net")
"""The factors of an offer's expected value that the substitution swaps (net: value of a conversion)."""
USER_CHUNK = 2_000


def model_factors(model, obs: np.ndarray) -> dict[str, np.ndarray]:
    """Each stage of `model` for every (user, action): arrays (n, n_actions)."""
    n, n_actions = len(obs), model.n_actions
    out = {s: np.empty((n, n_actions)) for s in (*STAGES, "contact")}
    actions = np.arange(n_actions)
    for lo in range(0, n, USER_CHUNK):
        part = obs[lo : lo + USER_CHUNK]
        o = model.evaluate(np.repeat(part, n_actions, axis=0), np.tile(actions, len(part)))
        for name, field in (
            ("open", o.open),
            ("click", o.click),
            ("convert", o.convert),
            ("unsubscribe", o.unsubscribe),
            ("net", o.net_conversion),
            ("contact", o.contact_cost),
        ):
            out[name][lo : lo + len(part)] = field.reshape(len(part), n_actions)
    return out


def truth_factors(truth: GroundTruth, user_ids: np.ndarray, k: np.ndarray) -> dict[str, np.ndarray]:
    """The truth's stages for every (user, action) on the night END with fatigue k."""
    r = truth.response_matrix(user_ids, night=END, offers_last_7d=k)
    return {
        "open": r.p_open,
        "click": r.p_click,
        "convert": r.p_convert,
        "unsubscribe": r.p_unsubscribe,
        "net": r.net_value,
        "contact": r.contact_cost,
    }


def expected_value(f: dict[str, np.ndarray], penalty: float) -> np.ndarray:
    return f["open"] * f["click"] * f["convert"] * f["net"] - f["contact"] - penalty * f["open"] * f["unsubscribe"]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")


def within_user_corr(m: np.ndarray, t: np.ndarray, mask: np.ndarray) -> float:
    """Mean over users of the correlation across their allowed actions (users where both vary)."""
    w = mask.astype(np.float64)
    cnt = np.maximum(w.sum(axis=1, keepdims=True), 1.0)
    mc = (m - (m * w).sum(axis=1, keepdims=True) / cnt) * w
    tc = (t - (t * w).sum(axis=1, keepdims=True) / cnt) * w
    vm, vt = (mc**2).sum(axis=1), (tc**2).sum(axis=1)
    ok = (vm > 1e-18) & (vt > 1e-18) & (w.sum(axis=1) >= 2)
    return float(((mc * tc).sum(axis=1)[ok] / np.sqrt(vm[ok] * vt[ok])).mean()) if ok.any() else float("nan")


def stage_row(name: str, m: np.ndarray, t: np.ndarray, mask: np.ndarray) -> tuple:
    """(name, corr over allowed (user, action), mean model, mean truth, their ratio, within-user corr)."""
    mm, tt = float(m[mask].mean()), float(t[mask].mean())
    return name, _corr(m[mask], t[mask]), mm, tt, mm / tt, within_user_corr(m, t, mask)


def stage_table(mf: dict, tf: dict, mask: np.ndarray, penalty: float) -> list[tuple]:
    """`stage_row` of each stage, of P(convert) (the product of the first three) and of the value."""
    rows = [stage_row(s, mf[s], tf[s], mask) for s in STAGES]
    converted = [f["open"] * f["click"] * f["convert"] for f in (mf, tf)]
    rows.append(stage_row("P(convert)", *converted, mask))
    rows.append(stage_row("value", expected_value(mf, penalty), expected_value(tf, penalty), mask))
    return rows


def greedy(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask.any(axis=1), np.where(mask, values, -np.inf).argmax(axis=1), -1)


def substitution_choices(mf: dict, tf: dict, mask: np.ndarray, penalty: float) -> dict[str, np.ndarray]:
    """Greedy choices on the model with one stage the truth's, and on the truth with one the model's."""
    choices = {"greedy on model": greedy(expected_value(mf, penalty), mask)}
    for s in STAGES:
        choices[f"truth {s}"] = greedy(expected_value(mf | {s: tf[s]}, penalty), mask)
    for s in STAGES:
        choices[f"model {s} only"] = greedy(expected_value(tf | {s: mf[s]}, penalty), mask)
    choices["truth, all five"] = greedy(expected_value(tf | {"contact": mf["contact"]}, penalty), mask)
    return choices


def agreement(catalog, chosen: np.ndarray, oracle: np.ndarray) -> dict[str, float]:
    actions = catalog.actions
    ok = (chosen >= 0) & (oracle >= 0)
    out = {}
    for attr in ("channel", "timing", "offer_type", "value"):
        lab = np.array([getattr(a, attr) for a in actions], dtype=object)
        out[attr] = float((lab[chosen[ok]] == lab[oracle[ok]]).mean())
    out["action"] = float((chosen[ok] == oracle[ok]).mean())
    return out


def rescaled_open(shape: np.ndarray, level: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """P(open) with `shape`'s variation across a channel's actions (the timings) and `level`'s mean
    over them, per user and channel."""
    out = shape.copy()
    for c in dict.fromkeys(channels):
        sel = channels == c
        mean = shape[:, sel].mean(axis=1, keepdims=True)
        out[:, sel] = shape[:, sel] * level[:, sel].mean(axis=1, keepdims=True) / np.maximum(mean, 1e-12)
    return out


def posterior_choices(
    mf: dict, pf: dict, mask: np.ndarray, penalty: float, offer_types: np.ndarray, channels: np.ndarray
) -> dict:
    """Greedy on the model with one stage the posterior's (all actions, then one offer type's, and
    the open's level or its shape across the timings), and on the posterior with one stage the model's."""
    choices = {"greedy on model": greedy(expected_value(mf, penalty), mask)}
    choices["greedy on posterior stages"] = greedy(expected_value(pf, penalty), mask)
    for s in STAGES:
        choices[f"posterior {s}"] = greedy(expected_value(mf | {s: pf[s]}, penalty), mask)
    for s in STAGES:
        choices[f"model {s} in posterior"] = greedy(expected_value(pf | {s: mf[s]}, penalty), mask)
    shape = rescaled_open(pf["open"], mf["open"], channels)
    choices["posterior open shape"] = greedy(expected_value(mf | {"open": shape}, penalty), mask)
    level = rescaled_open(mf["open"], pf["open"], channels)
    choices["posterior open level"] = greedy(expected_value(mf | {"open": level}, penalty), mask)
    for t in dict.fromkeys(offer_types):
        for s in ("click", "convert", "net"):
            mixed = np.where(offer_types == t, pf[s], mf[s])
            choices[f"posterior {s} of {t}"] = greedy(expected_value(mf | {s: mixed}, penalty), mask)
    return choices


def against_posterior(conn, config, data, seed: int, truth, states, mask, k, mf, tf) -> dict:
    """Item 4 of the module docstring."""
    started = time.perf_counter()
    catalog = config.catalog
    observed = load_observed(conn, END, states.user_ids)
    pf = posterior_stages(observed, truth.params, catalog, END, k)
    print(f"\nposterior stages in {time.perf_counter() - started:.0f} s; correlation with the truth per stage:")
    print(f"  {'stage':<12} {'model':>7} {'posterior':>10}")
    for s in STAGES:
        print(f"  {s:<12} {stage_row(s, mf[s], tf[s], mask)[1]:>7.3f} {stage_row(s, pf[s], tf[s], mask)[1]:>10.3f}")
    offer_types = np.array([a.offer_type for a in catalog.actions])
    channels = np.array([a.channel for a in catalog.actions])
    choices = posterior_choices(mf, pf, mask, config.reward.unsubscribe_penalty, offer_types, channels)
    result = evaluate_against_truth(
        conn, truth_path_for(data), END, {}, catalog=catalog, n_boot=200, seed=seed, choices=choices
    )
    print()
    print(result.table(), flush=True)
    return {r.name: (r.normalised, r.normalised_lower, r.normalised_upper) for r in result.rows}


def diagnose(conn, settings, config, data, seed: int, *, posterior: bool = False) -> dict:
    catalog = config.catalog
    started = time.perf_counter()
    model = fit_response_model(conn, settings, catalog, config.reward, END, seed=seed, config=config.learning)
    print(f"response model fitted in {time.perf_counter() - started:.0f} s", flush=True)
    truth = GroundTruth.load(truth_path_for(data))
    states = load_states(conn, END)
    mask = states.action_mask(catalog)
    k = states.raw[:, FEATURE_NAMES.index("offers_last_7d")]
    obs = states.obs.astype(np.float64)
    mf = model_factors(model, obs)
    tf = truth_factors(truth, states.user_ids, k)
    penalty = config.reward.unsubscribe_penalty

    print(f"\nper stage, over {int(mask.sum()):,} allowed (user, action) of {len(states):,} users:")
    print(f"  {'stage':<12} {'corr':>7} {'mean model':>11} {'mean truth':>11} {'ratio':>7} {'within-user corr':>17}")
    table = stage_table(mf, tf, mask, penalty)
    for name, c, m, t, ratio, w in table:
        print(f"  {name:<12} {c:>7.3f} {m:>11.5f} {t:>11.5f} {ratio:>7.3f} {w:>17.3f}")

    choices = substitution_choices(mf, tf, mask, penalty)
    # the same choice through the shipped policy class: the two rows must agree
    policies = {"greedy on model (policy)": ResponseGreedyPolicy(catalog, model)}
    result = evaluate_against_truth(
        conn, truth_path_for(data), END, policies, catalog=catalog, n_boot=200, seed=seed, choices=choices
    )
    print()
    print(result.table(), flush=True)
    oracle = choices["truth, all five"]
    print("\nagreement with the oracle's choice (share of users):")
    print(f"  {'choice':<22} {'channel':>8} {'timing':>8} {'type':>8} {'value':>8} {'action':>8}")
    for name in ("greedy on model", *(f"truth {s}" for s in STAGES)):
        a = agreement(catalog, choices[name], oracle)
        print(
            f"  {name:<22} {a['channel']:>8.3f} {a['timing']:>8.3f} {a['offer_type']:>8.3f} "
            f"{a['value']:>8.3f} {a['action']:>8.3f}"
        )
    normalised = {r.name: (r.normalised, r.normalised_lower, r.normalised_upper) for r in result.rows}
    if posterior:
        against = against_posterior(conn, config, data, seed, truth, states, mask, k, mf, tf)
        normalised |= {name: v for name, v in against.items() if name not in normalised}
    return {"stages": {row[0]: row[1:] for row in table}, "normalised": normalised}


def one_seed(
    server: str, seed: int, users: int, days: int, *, keep: bool, database: str | None, posterior: bool
) -> dict:
    data = PROJECT_ROOT / "data" / "bench" / f"policy_u{users}_d{days}_s{seed}"
    if not (data / "events.csv").exists():
        generate_data(users=users, days=days, seed=seed, out=data, end_date=END)
    config = load_config()
    # as the policy benchmark: the seed's 108 offers, without the rest action
    config = dataclasses.replace(config, catalog=config.catalog.without_rest())
    scratch = nullcontext(database) if database else scratch_database(server, "recsys_bench_stage_gap", keep=keep)
    with scratch as url:
        settings = load_settings(env={}, database_url=url)
        with connect(url) as conn:
            if database is None:
                started = time.perf_counter()
                migrate(conn, settings)
                extract_path(conn, settings, data, reference_at=dt.datetime.combine(END, dt.time(), dt.UTC))
                build_features(conn, settings, END - dt.timedelta(days=1))
                build_features(conn, settings, END)
                print(f"extracted and features built in {time.perf_counter() - started:.0f} s", flush=True)
            return diagnose(conn, settings, config, data, seed, posterior=posterior)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 1])
    parser.add_argument("--posterior", action="store_true", help="take the posterior ceiling apart too (item 4)")
    parser.add_argument("--keep", action="store_true", help="keep each seed's scratch database (names printed)")
    parser.add_argument("--database", help="reuse this database (one seed; extracted and features built)")
    args = parser.parse_args()
    if args.database and len(args.seeds) != 1:
        parser.error("--database serves one seed")
    server = bench_server()
    results = {}
    for seed in args.seeds:
        print(f"\n=== seed {seed}: {args.users:,} users x {args.days} days", flush=True)
        results[seed] = one_seed(
            server, seed, args.users, args.days, keep=args.keep, database=args.database, posterior=args.posterior
        )
    print(f"\nnormalised value under the truth, seeds {args.seeds}:")
    for name in results[args.seeds[0]]["normalised"]:
        cells = [f"{results[s]['normalised'][name][0]:.3f}" for s in args.seeds]
        print(f"  {name:<22} " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
