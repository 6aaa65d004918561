"""Evidence path b of the gate: the response model, refitted on resamples of its training users,
is confident the challenger beats the rule heuristic, and the logs do not contradict it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import TRAINING_SHOP_END

from recsys.config import load_config
from recsys.config.learning import FitConfig
from recsys.config.settings import Settings
from recsys.data.logged_offers import fit_response_model_with_bootstrap
from recsys.data.states import load_states
from recsys.db import Connection
from recsys.evaluation.baseline import conservative_baseline, crown_baseline
from recsys.evaluation.challenger import evaluate_challenger
from recsys.evaluation.gate import GateConfig, decide
from recsys.evaluation.registry import champion, get_model
from recsys.evaluation.results import ChallengerEvaluation, GateDecision, OffPolicyValue
from recsys.model.baselines import FixedActionPolicy, ResponseGreedyPolicy

END = TRAINING_SHOP_END  # the `shop` / `loaded` fixtures of conftest
CONFIG = load_config()
MODEL_PATH = "under the response model"
SURE = FitConfig(l2_prior_shrunk=100.0)
"""The fit these tests of the gate's logic use: on this small shop, a model whose prior-shrunk
slopes are held as close to 0 as first shipped is sure of the greedy challenger in every refit
(at the shipped 10, one refit of eight puts it 0.001 below the rule)."""


def _model_check(decision: GateDecision):
    return next(r for r in decision.reasons if MODEL_PATH in r.check)


def _evaluate(conn: Connection, settings: Settings, make_policy) -> ChallengerEvaluation:
    """A challenger (`make_policy(response, states)`) against the crowned rule heuristic, with 8 refits."""
    catalog = CONFIG.catalog
    response, bootstrap = fit_response_model_with_bootstrap(
        conn, settings, catalog, CONFIG.reward, END, seed=0, config=SURE
    )
    assert bootstrap is not None
    states = load_states(conn, END)
    crown_baseline(conn, catalog, as_of=END, states=states, response=response, seed=0, reason="test")
    return evaluate_challenger(
        conn,
        make_policy(response, states),
        as_of=END,
        states=states,
        response=response,
        catalog=catalog,
        current=champion(conn),
        seed=0,
        baseline=conservative_baseline(catalog),
        refits=bootstrap.refits(8, seed=0),
    )


def test_refits_learn_from_resamples_of_the_fits_training_users(loaded: Connection, settings: Settings) -> None:
    response, bootstrap = fit_response_model_with_bootstrap(
        loaded, settings, CONFIG.catalog, CONFIG.reward, END, seed=0
    )
    assert bootstrap is not None
    # the held-out users stay out: the refits resample the users the night's fit trained on
    assert bootstrap.n_users == response.fit_report["offers"]["users_train"]
    refits = list(bootstrap.refits(3, seed=1))
    assert [r.fit_report["kind"] for r in refits] == ["bootstrap_refit"] * 3
    states = load_states(loaded, END)
    night = response.reward_matrix(states.obs)
    moved = [np.abs(r.reward_matrix(states.obs) - night).mean() for r in refits]
    assert all(m > 0 for m in moved)  # each resample gives another fit
    again = next(iter(bootstrap.refits(1, seed=1)))
    assert np.allclose(again.reward_matrix(states.obs), refits[0].reward_matrix(states.obs))  # seeded
    # started from the night's coefficients, a refit reaches the same optimum (the prior is the centre)
    warm = next(iter(bootstrap.refits(1, seed=1, start=response)))
    assert np.abs(warm.reward_matrix(states.obs) - refits[0].reward_matrix(states.obs)).max() < 2e-3
    with pytest.raises(ValueError, match="refits must be >= 0"):
        next(iter(bootstrap.refits(-1, seed=0)))


def test_refits_bounded_in_offers_draw_fewer_users_and_spread_wider(loaded: Connection, settings: Settings) -> None:
    response, bootstrap = fit_response_model_with_bootstrap(
        loaded, settings, CONFIG.catalog, CONFIG.reward, END, seed=0
    )
    assert bootstrap is not None
    states = load_states(loaded, END)

    def spread(refits) -> tuple[float, list[int]]:
        refits = list(refits)
        values = [r.reward_matrix(states.obs).mean(axis=0) for r in refits]
        return float(np.std(values, axis=0).mean()), [r.fit_report["draws"] for r in refits]

    full, full_draws = spread(bootstrap.refits(8, seed=3, start=response))
    bounded, bounded_draws = spread(bootstrap.refits(8, seed=3, start=response, max_offers=bootstrap.offers // 4))
    assert full_draws == [bootstrap.n_users] * 8
    assert bounded_draws == [round(bootstrap.n_users * (bootstrap.offers // 4) / bootstrap.offers)] * 8
    assert bounded_draws[0] < bootstrap.n_users / 3.9
    assert bounded > full  # a fit on a quarter of the users varies more: the check gets stricter
    # a bound above the offers changes nothing
    same, _ = spread(bootstrap.refits(8, seed=3, start=response, max_offers=bootstrap.offers))
    assert same == pytest.approx(full)
    with pytest.raises(ValueError, match="max_offers must be >= 1"):
        next(iter(bootstrap.refits(1, seed=0, max_offers=0)))


def test_a_challenger_the_model_is_sure_of_and_the_logs_do_not_contradict_is_promoted(
    loaded: Connection, settings: Settings
) -> None:
    evaluation = _evaluate(loaded, settings, lambda response, states: ResponseGreedyPolicy(CONFIG.catalog, response))
    evidence = evaluation.model_evidence
    assert evidence is not None and len(evidence.refit_differences) == 8 and evidence.seconds > 0
    assert evidence.difference > 0 and evidence.quantile(0.05) > 0
    diff = evaluation.baseline_diff
    assert diff is not None and diff.upper >= 0
    # the logs alone are no evidence on this small shop; the model's confidence is
    decision = decide(evaluation, evaluation.champion, GateConfig())
    logs_check = next(r for r in decision.reasons if "conservative baseline" in r.check)
    assert not logs_check.passed
    assert decision.decision == "promoted", decision.describe()
    assert _model_check(decision).passed and "8 refits" in _model_check(decision).detail
    assert "do not contradict" in _model_check(decision).detail
    # ... unless the logs' paired difference over the rule is clearly negative: vetoed
    contradicted = dataclasses.replace(evaluation, baseline_diff=OffPolicyValue(-0.05, -0.09, -0.01))
    vetoed = decide(contradicted, evaluation.champion, GateConfig())
    assert vetoed.decision == "rejected"
    assert not _model_check(vetoed).passed and "the logs contradict it" in _model_check(vetoed).detail
    # and without refits there is no model evidence
    none = decide(dataclasses.replace(evaluation, model_evidence=None), evaluation.champion, GateConfig())
    assert none.decision == "rejected" and "no model evidence" in _model_check(none).detail
    # the evaluation, with its refits' differences, round-trips through the stored layout
    stored = evaluation.to_json()
    assert stored["model_evidence"]["refit_differences"] == list(evidence.refit_differences)
    restored = ChallengerEvaluation.from_json(stored)
    assert restored.model_evidence == evidence and restored.baseline_diff == diff
    assert decide(restored, evaluation.champion, GateConfig()).reasons == decision.reasons


def test_a_challenger_worse_than_the_rule_under_the_model_is_rejected(loaded: Connection, settings: Settings) -> None:
    def worst(response, states):
        return FixedActionPolicy(CONFIG.catalog, int(response.reward_matrix(states.obs).mean(axis=0).argmin()))

    evaluation = _evaluate(loaded, settings, worst)
    evidence = evaluation.model_evidence
    assert evidence is not None and evidence.quantile(0.95) < 0
    decision = decide(evaluation, evaluation.champion, GateConfig())
    assert decision.decision == "rejected"
    assert not _model_check(decision).passed and "lower must be > 0" in _model_check(decision).detail


def test_training_records_the_model_evidence_with_its_gate_check(loaded: Connection, settings: Settings) -> None:
    from recsys.orchestration.train import TrainConfig, train

    tiny = TrainConfig(total_timesteps=2048, n_envs=64, n_steps=16, batch_size=256, n_epochs=2, seed=7)
    gate = GateConfig(model_evidence_refits=4, model_evidence_min_offers=0)
    result = train(loaded, settings, config=CONFIG, as_of=END, train_config=tiny, gate=gate)
    stored = get_model(loaded, result.record.model_version)
    assert len(stored.evaluation["model_evidence"]["refit_differences"]) == 4
    assert stored.evaluation["model_evidence"]["training_offers"] > 0
    assert ChallengerEvaluation.from_json(stored.evaluation).model_evidence == result.evaluation.model_evidence
    checks = [r for r in stored.gate_reasons if MODEL_PATH in r["check"]]
    assert len(checks) == 1 and "4 refits" in checks[0]["detail"]
    logs_passed = any(r["passed"] for r in stored.gate_reasons if "conservative baseline" in r["check"])
    if result.decision.promoted:  # only on evidence, from either path
        assert checks[0]["passed"] or logs_passed


def test_on_a_fit_of_fewer_offers_than_the_minimum_path_b_fails_by_name_without_refits(
    loaded: Connection, settings: Settings
) -> None:
    from recsys.orchestration.train import TrainConfig, train

    tiny = TrainConfig(total_timesteps=2048, n_envs=64, n_steps=16, batch_size=256, n_epochs=2, seed=7)
    result = train(loaded, settings, config=CONFIG, as_of=END, train_config=tiny, gate=GateConfig())
    evidence = result.evaluation.model_evidence
    assert evidence is not None and evidence.refit_differences == ()  # no refits paid for
    assert 0 < evidence.training_offers < GateConfig().model_evidence_min_offers
    check = next(r for r in get_model(loaded, result.record.model_version).gate_reasons if MODEL_PATH in r["check"])
    assert not check["passed"]
    assert f"trained on {evidence.training_offers:,} logged offers" in check["detail"]
    assert f"model_evidence_min_offers {GateConfig().model_evidence_min_offers:,}" in check["detail"]


def test_the_minimum_of_training_offers_decides_whether_path_b_counts(loaded: Connection, settings: Settings) -> None:
    evaluation = _evaluate(loaded, settings, lambda response, states: ResponseGreedyPolicy(CONFIG.catalog, response))
    evidence = evaluation.model_evidence
    assert evidence is not None and evidence.quantile(0.05) > 0
    offers = 20_000
    counted = dataclasses.replace(evaluation, model_evidence=dataclasses.replace(evidence, training_offers=offers))
    assert _model_check(decide(counted, evaluation.champion, GateConfig(model_evidence_min_offers=offers))).passed
    below = decide(counted, evaluation.champion, GateConfig(model_evidence_min_offers=offers + 1))
    assert below.decision == "rejected" and not _model_check(below).passed
    assert "no model evidence yet" in _model_check(below).detail
    # an evaluation stored before the count was recorded is judged as it was then
    assert ChallengerEvaluation.from_json(evaluation.to_json()).model_evidence.training_offers is None


def test_the_gate_config_refuses_bad_evidence_settings() -> None:
    with pytest.raises(ValueError, match="model_evidence_refits must be >= 0"):
        GateConfig(model_evidence_refits=-1)
    with pytest.raises(ValueError, match="model_evidence_max_offers must be >= 1"):
        GateConfig(model_evidence_max_offers=0)
    with pytest.raises(ValueError, match="model_evidence_min_offers must be >= 0"):
        GateConfig(model_evidence_min_offers=-1)
    with pytest.raises(ValueError, match="model_evidence_quantile must be in"):
        GateConfig(model_evidence_quantile=0.5)


def test_the_gates_off_policy_checks_read_a_bounded_sample_of_the_logs(loaded: Connection, settings: Settings) -> None:
    from recsys.data.logged_offers import ensure_point_in_time_features
    from recsys.evaluation.challenger import off_policy_values
    from recsys.evaluation.model_eval import realised_reward
    from recsys.evaluation.ope import load_logged_offers, off_policy_evaluation
    from recsys.model.baselines import UniformRandomPolicy
    from recsys.model.response import prior_response_model

    catalog = CONFIG.catalog
    response = prior_response_model(catalog, CONFIG.reward)
    policy = UniformRandomPolicy(catalog)  # spread over every offer: a large effective sample
    ensure_point_in_time_features(loaded, settings, END)
    n = len(load_logged_offers(loaded, catalog, until=END))
    assert n > 1000
    full = off_policy_values(loaded, END, catalog, response, policy, None)
    bounded = off_policy_values(loaded, END, catalog, response, policy, None, max_decisions=n // 4)
    assert full is not None and bounded is not None
    expected = off_policy_evaluation(
        loaded,
        policy,
        catalog=catalog,
        reward_fn=lambda rows: realised_reward(rows, CONFIG.reward),
        q_fn=response.expected_reward,
        n_boot=200,
        max_offers=n // 4,
    )["dr"]
    # the sample of `off_policy_evaluation(max_offers=...)`: the same estimate, on fewer decisions
    assert (bounded.challenger.value, bounded.challenger.lower) == pytest.approx((expected.value, expected.lower))
    assert bounded.challenger.effective_sample_size < full.challenger.effective_sample_size
    assert GateConfig().off_policy_max_decisions == 200_000  # the shipped bound (recsys/config.toml)
    assert load_config().gate.off_policy_max_decisions == 200_000
