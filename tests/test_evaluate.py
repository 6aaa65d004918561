"""Tests of `recsys.evaluation.ope`: the off-policy estimators, the log reader, and the truth table.

The estimators are checked on synthetic logs of a contextual bandit whose true value is known in
closed form. The database tests share one small generated shop (2,000 users over 30 days, loaded
and featurised once for the module); tests that add rows do it inside a transaction they roll back.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from shop_support import clear_shop

from recsys.benchmark.synth.generate import generate_data, truth_path_for
from recsys.benchmark.synth.truth import GroundTruth
from recsys.benchmark.truth_eval import FIXED_ROW, ORACLE_ROW, RANDOM_ROW, TruthEvaluation, evaluate_against_truth
from recsys.config.catalog import Catalog, load_catalog
from recsys.config.settings import load_settings
from recsys.data.extract import extract_path
from recsys.data.features import build_feature_range
from recsys.data.states import load_states
from recsys.db import Connection, connect, fetch_all, fetch_value
from recsys.errors import RecsysError
from recsys.evaluation.ope import (
    Estimate,
    direct_method,
    doubly_robust,
    evaluation_report,
    ips,
    load_logged_offers,
    off_policy_evaluation,
    on_policy_mean,
    snips,
    target_probabilities,
)
from recsys.model.baselines import FixedActionPolicy, RuleHeuristicPolicy, UniformRandomPolicy, choose
from recsys.model.observation import CONSENT_FEATURES, FEATURE_NAMES, STORED_FEATURES

CATALOG = load_catalog().without_rest()  # evaluation on the seed's 108 offers, as the truth knows them

# --- a contextual bandit with a known value ---------------------------------------------------------
# Two equally likely contexts, three actions, Bernoulli rewards with means MU[x, a]; the logging
# policy LOGGING[x] and the evaluated policy TARGET[x] differ, so IPS weights range from 1/6 to 7.
MU = np.array([[0.2, 0.5, 0.8], [0.7, 0.4, 0.1]])
LOGGING = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
TARGET = np.array([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1]])
TRUE_VALUE = float(0.5 * (TARGET * MU).sum())  # 0.645


def bandit_logs(seed: int, n: int) -> dict[str, np.ndarray]:
    """n logged rounds: context, logged action, reward, and every probability the estimators need."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, n)
    a = (rng.random(n)[:, None] > LOGGING[x].cumsum(axis=1)).sum(axis=1)
    r = (rng.random(n) < MU[x, a]).astype(np.float64)
    return {
        "x": x,
        "a": a,
        "rewards": r,
        "target": TARGET[x, a],
        "propensity": LOGGING[x, a],
        "q_logged": MU[x, a],
        "q_target": (TARGET[x] * MU[x]).sum(axis=1),
    }


def estimates(logs: dict[str, np.ndarray], *, n_boot: int, seed: int, q_shift: float = 0.0) -> dict[str, Estimate]:
    args = (logs["rewards"], logs["target"], logs["propensity"])
    shifted_q_target = (TARGET[logs["x"]] * (MU[logs["x"]] + q_shift)).sum(axis=1)
    return {
        "ips": ips(*args, n_boot=n_boot, seed=seed),
        "snips": snips(*args, n_boot=n_boot, seed=seed),
        "dr": doubly_robust(*args, logs["q_logged"], logs["q_target"], n_boot=n_boot, seed=seed),
        "dr_wrong_model": doubly_robust(*args, logs["q_logged"] + q_shift, shifted_q_target, n_boot=n_boot, seed=seed),
        "dm_wrong_model": direct_method(shifted_q_target, n_boot=n_boot, seed=seed),
    }


@pytest.fixture(scope="module")
def many_estimates() -> dict[str, np.ndarray]:
    """Each estimator on 1,000 independent logs of 200 rounds (point estimates only)."""
    runs = [estimates(bandit_logs(seed, 200), n_boot=0, seed=seed, q_shift=0.25) for seed in range(1000)]
    return {k: np.array([run[k].value for run in runs]) for k in runs[0]}


@pytest.mark.parametrize("name", ["ips", "snips", "dr", "dr_wrong_model"])
def test_estimators_are_unbiased(many_estimates: dict[str, np.ndarray], name: str) -> None:
    values = many_estimates[name]
    standard_error = values.std() / np.sqrt(len(values))
    assert abs(values.mean() - TRUE_VALUE) < 4 * standard_error, (values.mean(), TRUE_VALUE, standard_error)
    assert standard_error < 0.005  # the check above has teeth: a 2% bias would fail it


def test_a_wrong_reward_model_biases_the_direct_method_but_not_doubly_robust(
    many_estimates: dict[str, np.ndarray],
) -> None:
    assert many_estimates["dm_wrong_model"].mean() == pytest.approx(TRUE_VALUE + 0.25, abs=0.01)
    assert abs(many_estimates["dr_wrong_model"].mean() - TRUE_VALUE) < 0.01


def test_doubly_robust_with_a_perfect_model_has_lower_variance_than_ips(many_estimates: dict[str, np.ndarray]) -> None:
    # Bernoulli noise remains; IPS also carries the weights' variance (measured ratio about 0.5).
    assert many_estimates["dr"].std() < 0.7 * many_estimates["ips"].std()
    assert many_estimates["snips"].std() < many_estimates["ips"].std()


def test_bootstrap_intervals_cover_the_true_value_at_about_the_nominal_rate() -> None:
    covered = {k: 0 for k in ("ips", "snips", "dr")}
    runs = 200
    for seed in range(runs):
        result = estimates(bandit_logs(10_000 + seed, 400), n_boot=200, seed=seed)
        for k in covered:
            e = result[k]
            assert e.lower <= e.upper
            covered[k] += e.lower <= TRUE_VALUE <= e.upper
    rates = {k: v / runs for k, v in covered.items()}
    # Nominal 95%; 200 runs give a standard error of 1.5 points, percentile intervals run a little short.
    assert all(0.88 <= rate <= 0.99 for rate in rates.values()), rates


def test_snips_is_unchanged_by_a_common_propensity_scale_and_ips_is_not() -> None:
    logs = bandit_logs(3, 2_000)
    base = snips(logs["rewards"], logs["target"], logs["propensity"], n_boot=100, seed=1)
    scaled = snips(logs["rewards"], logs["target"], logs["propensity"] / 2, n_boot=100, seed=1)
    assert scaled.value == pytest.approx(base.value, rel=1e-12)
    assert (scaled.lower, scaled.upper) == pytest.approx((base.lower, base.upper), rel=1e-12)
    ips_base = ips(logs["rewards"], logs["target"], logs["propensity"], n_boot=0)
    ips_scaled = ips(logs["rewards"], logs["target"], logs["propensity"] / 2, n_boot=0)
    assert ips_scaled.value == pytest.approx(2 * ips_base.value, rel=1e-12)


def test_a_sample_mean_covers_the_population_mean_and_is_exact_over_everyone() -> None:
    from recsys.evaluation.estimators import sample_mean

    rng = np.random.default_rng(5)
    # per-user values shaped like the simulator's: mostly small, a long right tail, some negative
    population = np.where(rng.random(20_000) < 0.1, rng.lognormal(-2.0, 1.0, 20_000), -0.002)
    everyone = sample_mean(population)
    assert everyone.value == everyone.lower == everyone.upper == pytest.approx(population.mean())
    assert sample_mean(population, population=len(population)).upper == everyone.value
    covered, widths = 0, []
    for _ in range(400):
        e = sample_mean(rng.choice(population, 2_000, replace=False), population=len(population))
        covered += e.lower <= population.mean() <= e.upper
        widths.append(e.upper - e.lower)
    assert 0.92 <= covered / 400 <= 0.98  # a 95% interval
    # the finite-population correction: a tenth of the users keeps sqrt(0.9) of the plain width
    plain = 2 * 1.959964 * population.std(ddof=1) / np.sqrt(2_000)
    assert np.mean(widths) == pytest.approx(plain * np.sqrt(18_000 / 19_999), rel=0.05)
    with pytest.raises(ValueError, match=r"population \(10\) must be at least the sample's 20 users"):
        sample_mean(np.ones(20), population=10)
    with pytest.raises(ValueError, match="no users to average over"):
        sample_mean(np.array([]))


def test_snips_returns_a_constant_reward_exactly() -> None:
    logs = bandit_logs(4, 500)
    ones = np.ones(500)
    assert snips(ones, logs["target"], logs["propensity"], n_boot=50).value == pytest.approx(1.0, rel=1e-12)
    assert snips(ones, logs["target"], logs["propensity"], n_boot=50).upper == pytest.approx(1.0, rel=1e-12)
    assert ips(ones, logs["target"], logs["propensity"], n_boot=0).value != pytest.approx(1.0, abs=1e-3)


def test_on_policy_weights_reduce_every_estimator_to_the_mean() -> None:
    logs = bandit_logs(5, 1_000)
    r, p = logs["rewards"], logs["propensity"]
    mean = on_policy_mean(r, n_boot=200, seed=2)
    for e in (ips(r, p, p, n_boot=200, seed=2), snips(r, p, p, n_boot=200, seed=2)):
        assert e.value == pytest.approx(r.mean(), rel=1e-12)
        assert (e.lower, e.upper) == pytest.approx((mean.lower, mean.upper), rel=1e-12)
        assert e.effective_sample_size == pytest.approx(1_000)
    assert mean.n == 1_000


def test_effective_sample_size_is_kish() -> None:
    e = ips(np.array([1.0, 0.0]), np.array([0.5, 0.3]), np.array([0.5, 0.1]), n_boot=0)  # weights 1, 3
    assert e.effective_sample_size == pytest.approx(16 / 10)
    assert e.value == pytest.approx(0.5)
    assert np.isnan(e.lower) and np.isnan(e.upper)


def test_snips_without_any_positive_weight_is_undefined() -> None:
    e = snips(np.ones(3), np.zeros(3), np.full(3, 0.5), n_boot=20)
    assert np.isnan(e.value) and e.effective_sample_size == 0.0
    assert e.to_dict()["value"] is None


def test_bootstrap_interval_agrees_with_the_normal_interval_on_a_large_sample() -> None:
    # 50,000 rows: the bootstrap runs in several blocks of replicates.
    rng = np.random.default_rng(6)
    r = rng.exponential(2.0, 50_000)
    e = on_policy_mean(r, n_boot=400, seed=3)
    half = 1.96 * r.std() / np.sqrt(len(r))
    assert e.lower == pytest.approx(r.mean() - half, abs=0.15 * half)
    assert e.upper == pytest.approx(r.mean() + half, abs=0.15 * half)
    assert on_policy_mean(r, n_boot=400, seed=3) == e  # same seed, same interval


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.ones(3), np.ones(2), np.ones(3)), "target_prob_of_logged has 2 entries, rewards has 3"),
        ((np.ones(3), np.ones(3), np.array([0.5, 0.0, 1.0])), r"logged_propensity\[1\] = 0.0"),
        ((np.ones(3), np.ones(3), np.array([0.5, 1.5, 1.0])), r"logged_propensity\[1\] = 1.5"),
        ((np.ones(3), np.array([0.1, -0.1, 0.2]), np.ones(3)), r"target_prob_of_logged\[1\] = -0.1"),
        ((np.array([1.0, np.nan, 0.0]), np.ones(3), np.ones(3)), r"rewards\[1\] is nan"),
        ((np.ones((3, 2)), np.ones(3), np.ones(3)), "rewards must be one-dimensional"),
        ((np.zeros(0), np.zeros(0), np.zeros(0)), "no logged decisions"),
    ],
)
def test_estimators_refuse_bad_input(args: tuple, message: str) -> None:
    for estimator in (ips, snips):
        with pytest.raises(ValueError, match=message):
            estimator(*args)
    with pytest.raises(ValueError, match=message):
        doubly_robust(*args, np.zeros(len(args[0])), np.zeros(len(args[0])))


def test_doubly_robust_refuses_reward_model_terms_of_another_length() -> None:
    with pytest.raises(ValueError, match="q_target has 2 entries, rewards has 3"):
        doubly_robust(np.ones(3), np.ones(3), np.ones(3), np.zeros(3), np.zeros(2))


# --- the generated shop ------------------------------------------------------------------------------

END = dt.date(2026, 9, 1)
DAYS = 30
FIRST = END - dt.timedelta(days=DAYS)


@pytest.fixture(scope="module")
def shop(migrated_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """2,000 generated users over 30 days, extracted, with features for every day of the window."""
    folder = tmp_path_factory.mktemp("shop")
    out = folder / "data"
    generate_data(users=2000, days=DAYS, seed=3, out=out, end_date=END)
    settings = load_settings(env={}, database_url=migrated_url, data_dir=folder, inbox=folder / "inbox")
    with connect(migrated_url) as conn:
        clear_shop(conn)
        results = extract_path(conn, settings, out, reference_at=dt.datetime(2026, 9, 1, 12, tzinfo=dt.UTC))
        assert all(r.status == "loaded" for r in results), [r.describe() for r in results]
        build_feature_range(conn, settings, FIRST, END)
        yield {"conn": conn, "truth_path": truth_path_for(out), "folder": folder}
        conn.rollback()
        clear_shop(conn)


@pytest.fixture
def conn(shop: dict) -> Iterator[Connection]:
    """The shop's connection; whatever a test writes is rolled back."""
    yield shop["conn"]
    shop["conn"].rollback()


@pytest.fixture(scope="module")
def truth_eval(shop: dict) -> TruthEvaluation:
    policies = {"rule": RuleHeuristicPolicy(CATALOG), "uniform greedy": UniformRandomPolicy(CATALOG)}
    return evaluate_against_truth(shop["conn"], shop["truth_path"], END, policies, catalog=CATALOG, n_boot=100)


@pytest.fixture(scope="module")
def independent(shop: dict) -> dict:
    """The truth's value matrix for the users with features on END, computed without recsys.evaluation.ope."""
    states = load_states(shop["conn"], END)
    truth = GroundTruth.load(shop["truth_path"])
    values = truth.value_matrix(
        states.user_ids,
        night=END,
        offers_last_7d=states.raw[:, FEATURE_NAMES.index("offers_last_7d")],
        respect_consent=True,
    )
    return {"states": states, "mask": states.action_mask(CATALOG), "values": values, "truth": truth}


def test_states_over_max_users_are_a_uniform_sample_fixed_by_the_seed(shop: dict) -> None:
    conn = shop["conn"]
    everyone = load_states(conn, END)
    assert len(load_states(conn, END, max_users=len(everyone))) == len(everyone)  # at the bound: all
    first = load_states(conn, END, max_users=500, seed=1)
    again = load_states(conn, END, max_users=500, seed=1)
    other = load_states(conn, END, max_users=500, seed=2)
    assert 400 < len(first) < 600 and np.array_equal(first.user_ids, again.user_ids)
    assert set(first.user_ids) <= set(everyone.user_ids) and set(first.user_ids) != set(other.user_ids)
    assert np.all(np.diff(first.user_ids) > 0)  # still in user order
    rows = np.searchsorted(everyone.user_ids, first.user_ids)
    assert np.array_equal(first.raw, everyone.raw[rows]) and np.array_equal(first.obs, everyone.obs[rows])
    # uniform: the sample's mean features are the population's, within sampling noise
    spread = everyone.obs.std(axis=0) / np.sqrt(len(first))
    assert np.all(np.abs(first.obs.mean(axis=0) - everyone.obs.mean(axis=0)) <= 5 * spread + 1e-9)


def test_truth_table_orders_the_rows_and_the_oracle_is_best(truth_eval: TruthEvaluation) -> None:
    names = [r.name for r in truth_eval.rows]
    assert names == [RANDOM_ROW, FIXED_ROW, "rule", "uniform greedy", ORACLE_ROW]
    oracle = truth_eval.oracle.value
    assert oracle > 0
    for r in truth_eval.rows:
        assert r.value <= oracle + 1e-12, r.name
        assert r.lower <= r.value <= r.upper, r.name
        assert r.fraction_of_oracle == pytest.approx(r.value / oracle)
    assert truth_eval.random.normalised == 0.0 and truth_eval.oracle.normalised == 1.0
    assert (truth_eval.random.normalised_lower, truth_eval.random.normalised_upper) == (0.0, 0.0)
    rule = truth_eval.row("rule")
    r, o = truth_eval.random.value, oracle
    assert rule.normalised == pytest.approx((rule.value - r) / (o - r))
    assert rule.normalised_lower <= rule.normalised <= rule.normalised_upper
    # The seed's rule is better than chance; greedy on a uniform policy (always the first allowed
    # offer) is not, and the table shows it honestly.
    assert rule.normalised > 0.05
    assert truth_eval.row("uniform greedy").normalised < 0


def test_truth_table_values_match_the_value_matrix(truth_eval: TruthEvaluation, independent: dict) -> None:
    values, mask, states = independent["values"], independent["mask"], independent["states"]
    assert truth_eval.n_users == len(states) > 1000
    assert truth_eval.n_users_without_channel == int((~mask.any(axis=1)).sum()) > 0
    n_allowed = mask.sum(axis=1)
    random = np.where(n_allowed > 0, np.where(mask, values, 0).sum(axis=1) / np.maximum(n_allowed, 1), 0)
    oracle = np.where(n_allowed > 0, np.where(mask, values, -np.inf).max(axis=1), 0)
    assert truth_eval.random.value == pytest.approx(random.mean(), rel=1e-9)
    assert truth_eval.oracle.value == pytest.approx(oracle.mean(), rel=1e-9)
    actions, _ = choose(RuleHeuristicPolicy(CATALOG), states.obs, mask)
    rule = np.where(actions >= 0, values[np.arange(len(actions)), np.maximum(actions, 0)], 0)
    assert truth_eval.row("rule").value == pytest.approx(rule.mean(), rel=1e-9)
    # The uniform policy's expected value under its own probabilities is the random reference.
    assert truth_eval.row("uniform greedy").sampled_value == pytest.approx(random.mean(), rel=1e-9)


def test_best_fixed_offer_matches_an_independent_computation(truth_eval: TruthEvaluation, independent: dict) -> None:
    values, mask = independent["values"], independent["mask"]
    per_action = np.where(mask, values, 0.0).mean(axis=0)
    assert truth_eval.fixed_action_id == int(per_action.argmax())
    assert truth_eval.best_fixed.value == pytest.approx(per_action.max(), rel=1e-9)
    assert truth_eval.best_fixed.value >= per_action[RuleHeuristicPolicy(CATALOG).candidates.ravel()].max()
    # The truth's own best fixed action over the same users agrees (its consent has no address check).
    truth_best = independent["truth"].best_fixed_action(
        independent["states"].user_ids,
        night=END,
        offers_last_7d=independent["states"].raw[:, FEATURE_NAMES.index("offers_last_7d")],
    )
    assert truth_best == truth_eval.fixed_action_id
    action = CATALOG.actions[truth_eval.fixed_action_id]
    assert action.channel in truth_eval.best_fixed.note


def test_truth_table_renders_and_serialises(truth_eval: TruthEvaluation) -> None:
    text = truth_eval.table()
    lines = text.splitlines()
    assert f"night {END}" in lines[0] and "100 resamples" in lines[0]
    assert [line.split("  ")[0].strip() for line in lines[2:]] == [r.name for r in truth_eval.rows]
    value_end = lines[1].index("value/user/night") + len("value/user/night")
    for line, r in zip(lines[2:], truth_eval.rows, strict=True):  # values right-aligned under the header
        assert line[:value_end].endswith(f" {r.value:.4f}"), line
    assert f"{truth_eval.oracle.value:.4f}" in lines[-1]
    data = json.loads(json.dumps(truth_eval.to_dict()))
    assert data["as_of"] == END.isoformat()
    assert data["truth"]["seed"] == 3
    assert [r["name"] for r in data["rows"]] == [r.name for r in truth_eval.rows]
    assert data["rows"][-1]["value"] == pytest.approx(truth_eval.oracle.value)


def test_truth_evaluation_is_reproducible(shop: dict, truth_eval: TruthEvaluation) -> None:
    again = evaluate_against_truth(
        shop["conn"],
        shop["truth_path"],
        END,
        {"rule": RuleHeuristicPolicy(CATALOG), "uniform greedy": UniformRandomPolicy(CATALOG)},
        catalog=CATALOG,
        n_boot=100,
    )
    assert again == truth_eval


def test_truth_table_pairs_every_row_with_one_policy(shop: dict, truth_eval: TruthEvaluation) -> None:
    policies = {"rule": RuleHeuristicPolicy(CATALOG), "uniform greedy": UniformRandomPolicy(CATALOG)}
    paired = evaluate_against_truth(
        shop["conn"], shop["truth_path"], END, policies, catalog=CATALOG, n_boot=100, paired_with="rule"
    )
    # the rows and their intervals are those of the unpaired table
    fields = ("name", "value", "lower", "upper", "normalised", "normalised_lower", "normalised_upper")
    assert [[getattr(r, f) for f in fields] for r in paired.rows] == [
        [getattr(r, f) for f in fields] for r in truth_eval.rows
    ]
    rule = paired.row("rule")
    span = paired.oracle.value - paired.random.value
    for r in paired.rows:
        assert r.paired_difference == pytest.approx((rule.value - r.value) / span), r.name
        assert r.paired_lower <= r.paired_difference <= r.paired_upper, r.name
    assert (rule.paired_difference, rule.paired_lower, rule.paired_upper) == (0.0, 0.0, 0.0)
    assert paired.row("uniform greedy").paired_lower > 0  # the rule beats greedy-on-uniform, on the same users
    assert "paired diff" in paired.table().splitlines()[1]
    assert paired.to_dict()["rows"][3]["paired_difference"] == pytest.approx(
        paired.row("uniform greedy").paired_difference
    )
    with pytest.raises(ValueError, match="paired_with='nobody' is not one of the policies"):
        evaluate_against_truth(
            shop["conn"], shop["truth_path"], END, policies, catalog=CATALOG, n_boot=0, paired_with="nobody"
        )


def test_truth_of_other_data_is_refused(shop: dict, conn: Connection) -> None:
    other = shop["folder"] / "small"
    generate_data(users=500, days=5, seed=3, out=other, end_date=END)
    with pytest.raises(RecsysError, match="does not describe the users in the database"):
        evaluate_against_truth(conn, truth_path_for(other), END, {}, catalog=CATALOG, n_boot=0)


def test_truth_evaluation_refuses_another_catalog(shop: dict, conn: Connection) -> None:
    catalog = Catalog(
        offer_types=("discount",),
        values=(5.0,),
        channels=("email",),
        timings=("immediate",),
        value_units={"discount": "percent_off"},
        timing_delay_minutes={"immediate": 0},
    )
    with pytest.raises(RecsysError, match="another offer catalog"):
        evaluate_against_truth(conn, shop["truth_path"], END, {}, catalog=catalog)


def test_truth_evaluation_needs_features_of_the_night(shop: dict, conn: Connection) -> None:
    with pytest.raises(RecsysError, match=r"no user features as of 2026-09-05: build them first"):
        evaluate_against_truth(conn, shop["truth_path"], dt.date(2026, 9, 5), {}, catalog=CATALOG)


def test_truth_evaluation_refuses_reserved_names(shop: dict, conn: Connection) -> None:
    with pytest.raises(ValueError, match="reserved"):
        evaluate_against_truth(conn, shop["truth_path"], END, {"oracle": RuleHeuristicPolicy(CATALOG)}, catalog=CATALOG)


class LeakyPolicy:
    """Breaks the protocol: always the first action, allowed or not."""

    name = "leaky"

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        probs = np.zeros(mask.shape)
        probs[:, 0] = 1.0
        return probs


def test_a_policy_that_breaks_the_protocol_is_refused(shop: dict, conn: Connection) -> None:
    with pytest.raises(ValueError, match="which the mask does not allow"):
        evaluate_against_truth(conn, shop["truth_path"], END, {"leaky": LeakyPolicy()}, catalog=CATALOG)


# --- off-policy evaluation from the logged offers ---------------------------------------------------


def revenue_reward(rows: pd.DataFrame) -> np.ndarray:
    return rows["revenue"].to_numpy(dtype=np.float64, na_value=0.0) * rows["converted"].to_numpy(
        dtype=np.float64, na_value=0.0
    )


def test_logged_observations_are_the_ones_scoring_would_have_seen(conn: Connection) -> None:
    """The features of the decision's day, as scoring reads them; the consent of the send, which is
    today's for the users whose users row has not changed since (the others: the next test)."""
    logs = load_logged_offers(conn, CATALOG)
    assert len(logs) > 2000
    days = sorted(set(logs.rows["features_as_of"]))
    assert days[0] >= FIRST and days[-1] < END
    changed_at = {
        r["user_id"]: r["updated_at"] for r in fetch_all(conn, "select user_id, updated_at from recsys.users")
    }
    for day in (days[0], days[len(days) // 2], days[-1]):
        rows = np.flatnonzero((logs.rows["features_as_of"] == day).to_numpy())
        users = logs.rows["user_id"].to_numpy()[rows]
        states = load_states(conn, day, users)
        order = np.searchsorted(states.user_ids, users)
        assert (states.user_ids[order] == users).all()
        stored = [FEATURE_NAMES.index(n) for n in STORED_FEATURES]
        consent = [FEATURE_NAMES.index(n) for n in CONSENT_FEATURES]
        np.testing.assert_array_equal(logs.obs[rows][:, stored], states.obs[order][:, stored])
        sent = logs.rows["sent_at"].iloc[rows].tolist()
        same = np.array([changed_at[u] is None or changed_at[u] <= t for u, t in zip(users, sent, strict=True)])
        assert same.sum() > 0.9 * len(rows)
        np.testing.assert_array_equal(logs.obs[rows[same]][:, consent], states.obs[order[same]][:, consent])
        np.testing.assert_array_equal(logs.mask[rows[same]], states.action_mask(CATALOG)[order[same]])


def _allowed_channels(propensity: np.ndarray) -> np.ndarray:
    """How many channels the generator's logging policy could use for each of its offers:
    pi = 0.5 / |allowed| + 0.5 [the rule's action], with |allowed| = 36 actions per consented channel."""
    per_channel = CATALOG.n_actions // len(CATALOG.channels)
    uniform = np.where(propensity > 0.5, propensity - 0.5, propensity)
    return np.round(0.5 / (per_channel * uniform)).astype(np.int64)


def test_logged_consent_is_the_one_the_logging_policy_saw(conn: Connection) -> None:
    """The generator's logging policy chose among the channels the user consented to at that moment;
    some users unsubscribed afterwards, so today's consent would not match."""
    logs = load_logged_offers(conn, CATALOG)
    allowed = _allowed_channels(logs.propensity)
    consent = logs.rows[list(CONSENT_FEATURES)].to_numpy(dtype=bool)
    np.testing.assert_array_equal(consent.sum(axis=1), allowed)
    channel_of = np.array([CATALOG.channels.index(a.channel) for a in CATALOG.actions])
    reachable = np.column_stack([logs.mask[:, channel_of == k].any(axis=1) for k in range(len(CATALOG.channels))])
    np.testing.assert_array_equal(reachable.sum(axis=1), allowed)
    today = fetch_all(
        conn, "select user_id, email_opt_in::int + sms_opt_in::int + push_opt_in::int as n from recsys.users"
    )
    consented_today = {r["user_id"]: r["n"] for r in today}
    assert sum(consented_today.get(u, 0) != a for u, a in zip(logs.rows["user_id"], allowed, strict=True)) > 0


def test_logged_action_ids_match_the_catalog(conn: Connection) -> None:
    logs = load_logged_offers(conn, CATALOG)
    assert (logs.action_ids >= 0).all()
    for i in range(0, len(logs), 97):
        row = logs.rows.iloc[i]
        action = CATALOG.actions[logs.action_ids[i]]
        assert (action.offer_type, action.value, action.channel, action.timing) == (
            row["offer_type"],
            row["offer_value"],
            row["channel"],
            row["timing"],
        )


def _independent_uniform_ips(conn: Connection, since: dt.date | None = None, until: dt.date | None = None) -> dict:
    """The uniform policy's IPS terms straight from the tables: offers with features and a propensity,
    target probability 1 / (36 x the channels the user could receive when the offer was sent), which
    the generator's logging policy wrote into the propensity (`_allowed_channels`)."""
    with conn.cursor() as cur:
        cur.execute(
            """
            select h.propensity, coalesce(h.revenue, 0) * coalesce(h.converted::int, 0)
            from recsys.offer_history as h
            where h.propensity is not null
              and exists (select 1 from recsys.user_features as f
                          where f.as_of = (h.sent_at at time zone 'UTC')::date and f.user_id = h.user_id)
              and (%(since)s::date is null or (h.sent_at at time zone 'UTC')::date >= %(since)s::date)
              and (%(until)s::date is null or (h.sent_at at time zone 'UTC')::date < %(until)s::date)
            """,
            {"since": since, "until": until},
        )
        rows = np.array(cur.fetchall(), dtype=np.float64)
    propensity, reward = rows.T
    target = 1.0 / (CATALOG.n_actions // len(CATALOG.channels) * _allowed_channels(propensity))
    return {"n": len(rows), "ips": float((target / propensity * reward).mean()), "logged": float(reward.mean())}


def test_off_policy_evaluation_matches_an_independent_computation(conn: Connection) -> None:
    expected = _independent_uniform_ips(conn)
    ope = off_policy_evaluation(
        conn, UniformRandomPolicy(CATALOG), catalog=CATALOG, reward_fn=revenue_reward, n_boot=50
    )
    assert set(ope) == {"logged", "ips", "snips"}
    assert ope["ips"].n == expected["n"] > 2000
    assert ope["ips"].value == pytest.approx(expected["ips"], rel=1e-9)
    assert ope["logged"].value == pytest.approx(expected["logged"], rel=1e-9)
    assert ope["ips"].lower < ope["ips"].value < ope["ips"].upper


def test_off_policy_evaluation_agrees_with_the_estimator_functions(conn: Connection) -> None:
    policy = RuleHeuristicPolicy(CATALOG)

    def model(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return 0.01 * (actions % 4) + obs[:, 3]

    ope = off_policy_evaluation(conn, policy, catalog=CATALOG, reward_fn=revenue_reward, q_fn=model, n_boot=60, seed=4)
    logs = load_logged_offers(conn, CATALOG)
    r, p, b = revenue_reward(logs.rows), target_probabilities(policy, logs), logs.propensity
    probs = policy.probabilities(logs.obs, logs.mask)
    q_all = np.column_stack([model(logs.obs, np.full(len(logs), a)) for a in range(CATALOG.n_actions)])
    q_target = (probs * q_all).sum(axis=1)
    expected = {
        "logged": on_policy_mean(r, n_boot=60, seed=4),
        "ips": ips(r, p, b, n_boot=60, seed=4),
        "snips": snips(r, p, b, n_boot=60, seed=4),
        "dm": direct_method(q_target, n_boot=60, seed=4),
        "dr": doubly_robust(r, p, b, model(logs.obs, logs.action_ids), q_target, n_boot=60, seed=4),
    }
    assert list(ope) == list(expected)
    for key, e in expected.items():
        got = ope[key]
        assert (got.value, got.lower, got.upper) == pytest.approx((e.value, e.lower, e.upper), rel=1e-9), key
        assert (got.n, got.effective_sample_size) == pytest.approx((e.n, e.effective_sample_size)), key


def click_reward(rows: pd.DataFrame) -> np.ndarray:
    return rows["clicked"].to_numpy(dtype=np.float64, na_value=0.0)


def test_a_bounded_evaluation_uses_a_uniform_sample_and_widens_its_interval(conn: Connection) -> None:
    # Clicks, not revenue: a third of this shop's decisions holds a few dozen conversions, so the
    # bootstrap width of a revenue estimate depends on which large orders a sample happens to hold
    # (widths of 0.14 to 0.86 for one full width of 0.34), and a median over 12 samples is a lottery.
    policy = UniformRandomPolicy(CATALOG)
    full = off_policy_evaluation(conn, policy, catalog=CATALOG, reward_fn=click_reward, n_boot=200, seed=2)
    n = full["ips"].n

    def bounded(seed: int) -> Estimate:
        return off_policy_evaluation(
            conn, policy, catalog=CATALOG, reward_fn=click_reward, n_boot=100, seed=seed, max_offers=n // 3
        )["ips"]

    samples = [bounded(seed) for seed in range(12)]
    assert {e.n for e in samples} == {n // 3} and n // 3 < n
    # unbiased: over samples, the estimates centre on the full one (within 3 standard errors)
    values = np.array([e.value for e in samples])
    assert abs(values.mean() - full["ips"].value) < 3 * values.std(ddof=1) / np.sqrt(len(values))
    assert len(set(values)) == len(values)  # each seed draws its own sample
    # a third of the rows: intervals about sqrt(3) times wider
    widths = np.array([e.upper - e.lower for e in samples])
    assert np.median(widths) > 1.3 * (full["ips"].upper - full["ips"].lower)
    # the sample is the usable decisions' own rows, in their order
    logs = load_logged_offers(conn, CATALOG)
    sample = logs.sample(n // 3, seed=2)
    assert len(sample) == n // 3 and set(sample.rows["offer_id"]) <= set(logs.rows["offer_id"])
    assert sample.rows["offer_id"].tolist() == [i for i in logs.rows["offer_id"] if i in set(sample.rows["offer_id"])]
    assert logs.sample(None) is logs and logs.sample(n) is logs


def test_the_database_draws_the_sample_a_bounded_evaluation_reads(conn: Connection) -> None:
    from recsys.data.logged_offers import load_logged_offers as read
    from recsys.evaluation.ope import load_logged_sample

    everything = read(conn, CATALOG)
    ids = set(everything.rows["offer_id"])
    third, half = (
        read(conn, CATALOG, sample_rate=1 / 3, sample_seed=7),
        read(conn, CATALOG, sample_rate=0.5, sample_seed=7),
    )
    n = len(everything)
    for part, rate in ((third, 1 / 3), (half, 0.5)):
        assert abs(len(part) - rate * n) < 4 * np.sqrt(n * rate * (1 - rate))  # each decision in with that chance
        assert set(part.rows["offer_id"]) <= ids
    assert set(third.rows["offer_id"]) <= set(half.rows["offer_id"])  # a larger rate keeps the smaller's rows
    other = read(conn, CATALOG, sample_rate=1 / 3, sample_seed=8)
    assert set(other.rows["offer_id"]) != set(third.rows["offer_id"])
    with pytest.raises(ValueError, match=r"sample_rate must be in \(0, 1\)"):
        read(conn, CATALOG, sample_rate=1.0)
    # sized from an upper bound of the window's decisions, it holds enough usable ones to draw from
    usable = len(everything.evaluable())
    for bound in (usable // 10, usable // 2, usable - 1):
        logs = load_logged_sample(conn, CATALOG, max_decisions=bound, seed=3)
        assert bound <= len(logs) <= usable and set(logs.rows["offer_id"]) <= ids
    assert len(load_logged_sample(conn, CATALOG, max_decisions=usable + 1, seed=3)) == usable
    assert len(load_logged_sample(conn, CATALOG, max_decisions=None)) == usable


def test_a_bounded_read_is_sized_by_the_share_of_usable_decisions_and_read_once(
    conn: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    from recsys.data.logged_offers import load_logged_offers as read
    from recsys.data.logged_offers import logged_offers_sql
    from recsys.data.logged_sample import probe_window
    from recsys.evaluation.ope import load_logged_sample

    everything = read(conn, CATALOG)
    usable = len(everything.evaluable())
    assert 0 < usable < len(everything)  # this shop has decisions without the features of their day
    window = {"decided_from": None, "decided_before": None}
    upper = int(fetch_value(conn, logged_offers_sql("decisions_upper_bound"), window))
    # a probe of every decision counts the shares exactly (one added to both counts)
    whole = probe_window(conn, upper=1, rests=True)
    assert whole.share("usable") == (usable + 1) / (len(everything) + 1)
    # a probe of a sample estimates them
    probe = probe_window(conn, upper=upper * 20, rests=True, seed=3)  # about 1,000 of them
    counted = sum(v for (_, column), v in probe.counts.items() if column == "decisions")
    assert 0 < counted < len(everything) / 4
    share = usable / len(everything)
    assert abs(probe.share("usable") - share) < 4 * np.sqrt(share * (1 - share) / counted) + 1 / counted
    # sized with the share, the sample holds enough usable decisions at the first read
    with caplog.at_level(logging.INFO, logger="recsys.evaluation.ope"):
        for bound in (usable // 10, usable // 3, usable // 2):
            assert len(load_logged_sample(conn, CATALOG, max_decisions=bound, seed=3)) >= bound
    assert "reading a larger sample" not in caplog.text


def test_reading_the_logs_leaves_the_session_settings_alone(conn: Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("select set_config('jit', 'on', false)")
        load_logged_offers(conn, CATALOG)
        cur.execute("select current_setting('jit')")
        assert cur.fetchone()[0] == "on"


def test_off_policy_evaluation_reads_only_the_window(conn: Connection) -> None:
    since, until = FIRST + dt.timedelta(days=10), FIRST + dt.timedelta(days=20)
    expected = _independent_uniform_ips(conn, since, until)
    ope = off_policy_evaluation(
        conn,
        UniformRandomPolicy(CATALOG),
        catalog=CATALOG,
        reward_fn=revenue_reward,
        since=since,
        until=until,
        n_boot=0,
    )
    assert ope["ips"].n == expected["n"] < len(load_logged_offers(conn, CATALOG))
    assert ope["ips"].value == pytest.approx(expected["ips"], rel=1e-9)
    assert (
        off_policy_evaluation(
            conn, UniformRandomPolicy(CATALOG), catalog=CATALOG, reward_fn=revenue_reward, since=END, n_boot=0
        )
        == {}
    )


def test_unusable_and_off_catalog_offers(conn: Connection) -> None:
    before = load_logged_offers(conn, CATALOG)
    day = FIRST + dt.timedelta(days=15)
    user = int(before.rows.loc[before.rows["features_as_of"] == day, "user_id"].iloc[0])
    sent = dt.datetime.combine(day, dt.time(10), tzinfo=dt.UTC)
    with conn.cursor() as cur:
        cur.execute(
            """
            insert into recsys.offer_history (offer_id, user_id, sent_at, offer_type, offer_value, channel, timing,
                                              propensity, opened, clicked, converted, revenue, load_id)
            values ('t-no-propensity', %(user)s, %(sent)s, 'discount', 10, 'email', 'immediate', null,
                    true, true, true, 50, 0),
                   ('t-no-features', 999999, %(sent)s, 'discount', 10, 'email', 'immediate', 0.5,
                    true, true, true, 50, 0),
                   ('t-off-catalog', %(user)s, %(sent)s, 'discount', 7, 'email', 'immediate', 0.25,
                    true, true, true, 40, 0)
            """,
            {"user": user, "sent": sent},
        )
    after = load_logged_offers(conn, CATALOG)
    assert len(after) == len(before) + 1
    assert after.skipped == {"no_features": before.skipped["no_features"] + 1, "no_propensity": 1}
    off = np.flatnonzero((after.rows["offer_id"] == "t-off-catalog").to_numpy())
    assert after.action_ids[off].tolist() == [-1]
    policy = UniformRandomPolicy(CATALOG)
    assert target_probabilities(policy, after)[off].tolist() == [0.0]
    # The off-catalog offer weighs nothing but counts as a decision: IPS's sum is unchanged.
    old = off_policy_evaluation(conn, policy, catalog=CATALOG, reward_fn=revenue_reward, n_boot=0)
    conn.rollback()
    new_logs = load_logged_offers(conn, CATALOG)
    assert len(new_logs) == len(before)
    now = off_policy_evaluation(conn, policy, catalog=CATALOG, reward_fn=revenue_reward, n_boot=0)
    assert old["ips"].n == now["ips"].n + 1
    assert old["ips"].value * old["ips"].n == pytest.approx(now["ips"].value * now["ips"].n, rel=1e-12)
    assert old["logged"].value * old["logged"].n == pytest.approx(now["logged"].value * now["logged"].n + 40)


def test_doubly_robust_from_the_logs(conn: Connection) -> None:
    policy = RuleHeuristicPolicy(CATALOG)
    logs = load_logged_offers(conn, CATALOG)
    reachable = logs.mask.any(axis=1)
    assert reachable.all()  # the logged offer reached its user: some action was allowed then
    w = target_probabilities(policy, logs) / logs.propensity
    rewards = revenue_reward(logs.rows)

    def zero(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return np.zeros(len(actions))

    ope = off_policy_evaluation(conn, policy, catalog=CATALOG, reward_fn=revenue_reward, q_fn=zero, n_boot=0)
    assert set(ope) == {"logged", "ips", "snips", "dm", "dr"}
    assert ope["dr"].value == pytest.approx(ope["ips"].value, rel=1e-12)
    assert ope["dm"].value == 0.0

    def by_type(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        # A reward model that depends on the action and the observation.
        offer_type = np.array([CATALOG.offer_types.index(a.offer_type) for a in CATALOG.actions])
        return 1.0 + offer_type[actions] + obs[:, 4]

    ope = off_policy_evaluation(conn, policy, catalog=CATALOG, reward_fn=revenue_reward, q_fn=by_type, n_boot=0)
    q_logged = by_type(logs.obs, logs.action_ids)
    rule_actions, _ = choose(policy, logs.obs, logs.mask)
    q_target = np.where(reachable, by_type(logs.obs, np.maximum(rule_actions, 0)), 0.0)
    assert ope["dm"].value == pytest.approx(q_target.mean(), rel=1e-9)
    assert ope["dr"].value == pytest.approx((q_target + w * (rewards - q_logged)).mean(), rel=1e-9)


def test_paired_doubly_robust_difference(conn: Connection) -> None:
    rule, uniform = RuleHeuristicPolicy(CATALOG), UniformRandomPolicy(CATALOG)

    def by_type(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        offer_type = np.array([CATALOG.offer_types.index(a.offer_type) for a in CATALOG.actions])
        return 1.0 + offer_type[actions] + obs[:, 4]

    def ope(policy: object, baseline: object | None = None) -> dict:
        return off_policy_evaluation(
            conn, policy, catalog=CATALOG, reward_fn=revenue_reward, q_fn=by_type, n_boot=200, seed=3, baseline=baseline
        )

    paired, alone, base = ope(rule, uniform), ope(rule), ope(uniform)
    # the point estimate is the difference of the two estimates; nothing else changes
    assert paired["dr_diff"].value == pytest.approx(alone["dr"].value - base["dr"].value, rel=1e-9)
    assert {k: v for k, v in paired.items() if k not in ("dr_diff", "baseline_dr")} == alone
    assert paired["baseline_dr"] == base["dr"]  # same rows and resamples: the baseline's own estimate
    assert paired["dr_diff"].lower < paired["dr_diff"].value < paired["dr_diff"].upper
    # against itself: exactly zero, with no width (the shared terms cancel row by row)
    same = ope(rule, rule)["dr_diff"]
    assert (same.value, same.lower, same.upper) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)


def test_a_reward_matrix_gives_the_estimates_of_the_per_action_reward_model(conn: Connection) -> None:
    # uniform random spreads over every allowed action: the per-action path calls the model once
    # per action, the matrix path once per chunk for all policies; the estimates must not move
    rule, uniform = RuleHeuristicPolicy(CATALOG), UniformRandomPolicy(CATALOG)
    offer_type = np.array([CATALOG.offer_types.index(a.offer_type) for a in CATALOG.actions])

    def by_type(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return 1.0 + offer_type[actions] + obs[:, 4]

    def matrix(obs: np.ndarray) -> np.ndarray:
        return 1.0 + offer_type[None, :] + obs[:, 4:5]

    def ope(**q: object) -> dict:
        return off_policy_evaluation(
            conn,
            uniform,
            catalog=CATALOG,
            reward_fn=revenue_reward,
            n_boot=50,
            seed=5,
            baseline=rule,
            paired={"again": uniform},
            **q,
        )

    by_action, by_matrix = ope(q_fn=by_type), ope(q_matrix=matrix)
    assert set(by_matrix) == set(by_action) >= {"dm", "dr", "dr_diff", "baseline_dr", "again_dr", "again_dr_diff"}
    for key, e in by_action.items():
        got = by_matrix[key]
        assert (got.value, got.lower, got.upper) == pytest.approx((e.value, e.lower, e.upper), rel=1e-9, abs=1e-12), key
    assert by_matrix["again_dr_diff"].value == pytest.approx(0.0, abs=1e-12)
    # given both, the matrix is the one used
    assert ope(q_fn=lambda obs, actions: np.zeros(len(actions)), q_matrix=matrix)["dm"] == by_matrix["dm"]


def test_reward_fn_must_return_one_value_per_decision(conn: Connection) -> None:
    with pytest.raises(ValueError, match="reward_fn returned shape"):
        off_policy_evaluation(
            conn, UniformRandomPolicy(CATALOG), catalog=CATALOG, reward_fn=lambda rows: np.zeros(3), n_boot=0
        )


def test_evaluation_report(truth_eval: TruthEvaluation, conn: Connection) -> None:
    ope = off_policy_evaluation(
        conn,
        FixedActionPolicy(CATALOG, truth_eval.fixed_action_id),
        catalog=CATALOG,
        reward_fn=revenue_reward,
        n_boot=20,
    )
    text = evaluation_report(truth_eval, ope, policy_name="fixed")
    assert truth_eval.table() in text
    assert "Off-policy estimates for fixed from" in text
    for label in ("logged (as sent)", "IPS", "self-normalised IPS"):
        assert label in text
    assert "no truth file" in evaluation_report(None, ope)
    assert "no logged offers" in evaluation_report(None, {})
