"""The promotion gate: a worse model never replaces the champion."""

from __future__ import annotations

from typing import Any

import pytest

from recsys.evaluation.gate import GateConfig
from recsys.evaluation.gate import decide as decide_typed
from recsys.evaluation.results import ChallengerEvaluation, ChampionEvaluation, GateDecision, OffPolicyValue


def decide(challenger: dict[str, Any], champion: dict[str, Any] | None, config: GateConfig) -> GateDecision:
    """The gate on evaluations written in the stored (flat) layout of `policy_models.evaluation`."""
    best = None
    if champion is not None:
        dr = champion.get("dr_value")
        best = ChampionEvaluation(champion["simulator_value"], OffPolicyValue(dr, dr, dr) if dr is not None else None)
    return decide_typed(ChallengerEvaluation.from_json(challenger), best, config)


def _eval(sim: float, rnd: float = 0.01, dr: float | None = None, lower: float | None = None) -> dict:
    e = {"simulator_value": sim, "random_value": rnd}
    if dr is not None:
        e.update(dr_value=dr, dr_lower=lower)
    return e


def test_first_sane_model_is_a_bootstrap_champion() -> None:
    d = decide(_eval(0.05), None, GateConfig())
    assert d.decision == "bootstrap" and d.promoted
    assert d.reasons[0].passed is True


def test_a_model_no_better_than_random_is_rejected_even_without_champion() -> None:
    d = decide(_eval(0.01, rnd=0.02), None, GateConfig())
    assert d.decision == "rejected" and not d.promoted
    assert "beats uniform random" in d.describe() and "FAIL" in d.describe()


def test_worse_challenger_is_rejected_and_margin_is_honoured() -> None:
    champion = _eval(0.100)
    assert decide(_eval(0.097), champion, GateConfig(margin=0.05)).decision == "promoted"
    rejected = decide(_eval(0.097), champion, GateConfig(margin=0.02))
    assert rejected.decision == "rejected"
    assert any(not r.passed and "champion" in r.check for r in rejected.reasons)
    assert decide(_eval(0.12), champion, GateConfig(margin=0.0)).decision == "promoted"


def _paired(sim: float, diff: float, lower: float, upper: float) -> dict:
    return {**_eval(sim), "dr_value": 0.05, "dr_diff_value": diff, "dr_diff_lower": lower, "dr_diff_upper": upper}


def test_the_paired_off_policy_difference_can_veto_a_challenger() -> None:
    champion = _eval(0.10, dr=0.08, lower=0.06)
    # better in the simulator, but the logs show it clearly worse than the champion
    d = decide(_paired(0.11, diff=-0.03, lower=-0.05, upper=-0.01), champion, GateConfig(margin=0.02))
    assert d.decision == "rejected"
    assert [r.passed for r in d.reasons] == [True, True, False]
    assert "paired doubly robust" in d.describe()
    # a wide interval that includes 0 is no evidence against it: the simulator decides
    assert decide(_paired(0.11, -0.01, -0.05, 0.03), champion, GateConfig()).decision == "promoted"
    # just below zero, within margin x |champion's estimate| (0.02 x 0.08 = 0.0016)
    assert decide(_paired(0.11, -0.01, -0.02, -0.001), champion, GateConfig()).decision == "promoted"
    assert decide(_paired(0.11, -0.01, -0.02, -0.002), champion, GateConfig()).decision == "rejected"


def test_negative_values_use_the_margin_on_magnitude() -> None:
    champion = _eval(-0.10, rnd=-0.5)
    assert decide(_eval(-0.101, rnd=-0.5), champion, GateConfig(margin=0.02)).decision == "promoted"
    assert decide(_eval(-0.2, rnd=-0.5), champion, GateConfig(margin=0.02)).decision == "rejected"


def test_a_model_that_only_fools_the_simulator_is_rejected_once_logs_exist() -> None:
    fooled = {
        **_eval(0.05), "dr_value": 0.001, "dr_lower": -0.001, "dr_upper": 0.003, "random_dr_value": 0.004,
        "dr_effective_sample_size": 5_000.0,  # enough logs to judge (real evaluations carry it)
    }  # fmt: skip
    d = decide(fooled, None, GateConfig())
    assert d.decision == "rejected"
    assert [r.passed for r in d.reasons] == [True, False]
    honest = {**_eval(0.05), "dr_value": 0.006, "dr_lower": 0.001, "dr_upper": 0.011, "random_dr_value": 0.004}
    assert decide(honest, None, GateConfig()).decision == "bootstrap"
    noisy = {**_eval(0.05), "dr_value": 0.003, "dr_lower": -0.004, "dr_upper": 0.010, "random_dr_value": 0.004}
    assert decide(noisy, None, GateConfig()).decision == "bootstrap"


def test_the_logs_judge_only_with_enough_effective_sample() -> None:
    # worse than random on the logs, but resting on an effective 227 logged decisions: inconclusive
    thin = {
        **_eval(0.07, rnd=0.018),
        "dr_value": -0.012, "dr_lower": -0.041, "dr_upper": 0.007, "random_dr_value": 0.014,
        "dr_effective_sample_size": 227.0,
    }  # fmt: skip
    d = decide(thin, None, GateConfig())
    assert d.decision == "bootstrap"
    assert d.reasons[1].passed is True and d.reasons[1].inconclusive is True
    assert "[n/a]" in d.describe() and "inconclusive" in d.describe() and "227" in d.describe()
    # the same numbers on enough logs reject it; so does a stricter configuration on the thin ones
    assert decide({**thin, "dr_effective_sample_size": 1_000.0}, None, GateConfig()).decision == "rejected"
    assert decide(thin, None, GateConfig(min_effective_sample_size=200)).decision == "rejected"


def test_an_evaluation_round_trips_through_its_stored_layout() -> None:
    stored = {
        "simulator_value": 0.05, "random_value": 0.01, "users": 600, "env_steps_per_second": 900.0,
        "warm_start": {"examples": 10, "steps": 5, "epochs": 1.0, "final_loss": 2.0, "agreement": 0.5, "seconds": 0.1},
        "champion_simulator_value": 0.04, "dr_value": 0.03, "dr_lower": 0.01, "dr_upper": 0.05,
        "dr_effective_sample_size": 1500.0, "dr_diff_value": 0.01, "dr_diff_lower": -0.01, "dr_diff_upper": 0.02,
        "random_dr_value": 0.004, "champion_dr_value": 0.02, "champion_dr_lower": 0.0,
        "baseline_version": "rule-heuristic-1a2b3c4d-5e6f7a8b", "baseline_dr_diff_value": 0.02,
        "baseline_dr_diff_lower": 0.005, "baseline_dr_diff_upper": 0.035,
    }  # fmt: skip
    evaluation = ChallengerEvaluation.from_json(stored)
    assert evaluation.champion is not None and evaluation.champion.simulator_value == 0.04
    assert evaluation.dr_diff == OffPolicyValue(0.01, -0.01, 0.02)
    assert evaluation.baseline == "rule-heuristic-1a2b3c4d-5e6f7a8b"
    assert evaluation.baseline_diff == OffPolicyValue(0.02, 0.005, 0.035)
    assert evaluation.to_json() == stored


# --- evidence over the conservative baseline (the rule heuristic) ---------------------------------

RULE = "rule-heuristic-1a2b3c4d-5e6f7a8b"


def _over_rule(diff_lower: float | None, ess: float | None = 5_000.0, sim: float = 0.11) -> dict:
    """A challenger judged against the rule heuristic champion; diff_lower None: no logs."""
    e = {**_eval(sim), "baseline_version": RULE}
    if diff_lower is not None:
        e |= {
            "dr_value": 0.05, "dr_lower": 0.03, "dr_upper": 0.07, "dr_effective_sample_size": ess,
            "random_dr_value": 0.01, "dr_diff_value": diff_lower + 0.01, "dr_diff_lower": diff_lower,
            "dr_diff_upper": diff_lower + 0.02, "baseline_dr_diff_value": diff_lower + 0.01,
            "baseline_dr_diff_lower": diff_lower, "baseline_dr_diff_upper": diff_lower + 0.02,
        }  # fmt: skip
    return e


RULE_CHAMPION = _eval(0.05, dr=0.04, lower=0.03)


def _evidence(d: GateDecision):
    return next(r for r in d.reasons if "conservative baseline" in r.check)


def _model_evidence(d: GateDecision):
    return next(r for r in d.reasons if "under the response model" in r.check)


def _with_model(e: dict, *refits: float) -> dict:
    """`e` with model evidence: the refits' differences challenger - rule (night's model: their mean)."""
    return e | {"model_evidence": {"difference": sum(refits) / len(refits), "refit_differences": list(refits)}}


def test_without_logs_there_is_no_evidence_over_the_rule_and_the_champion_stays() -> None:
    d = decide(_over_rule(None), RULE_CHAMPION, GateConfig())
    assert d.decision == "rejected"
    assert not _evidence(d).passed and "no evidence yet: no logged offers" in _evidence(d).detail
    assert RULE in _evidence(d).check
    # better in the simulator than the champion: that alone never promotes it (nor does a
    # response model without refits: no model evidence either)
    assert all(r.passed for r in d.reasons if r is not _evidence(d) and r is not _model_evidence(d))
    assert not _model_evidence(d).passed and "no model evidence" in _model_evidence(d).detail
    # nor does it bootstrap on an empty registry
    assert decide(_over_rule(None), None, GateConfig()).decision == "rejected"


def test_too_thin_logs_are_no_evidence_either() -> None:
    d = decide(_over_rule(0.004, ess=227.0), RULE_CHAMPION, GateConfig())
    assert d.decision == "rejected"
    assert "no evidence yet" in _evidence(d).detail and "227" in _evidence(d).detail
    assert decide(_over_rule(0.004, ess=227.0), RULE_CHAMPION, GateConfig(min_effective_sample_size=200)).promoted


def test_a_challenger_whose_paired_lower_bound_over_the_rule_is_positive_is_promoted() -> None:
    d = decide(_over_rule(0.004), RULE_CHAMPION, GateConfig())
    assert d.decision == "promoted" and _evidence(d).passed
    assert "+0.00400" in _evidence(d).detail and "5,000" in _evidence(d).detail
    # a lower end at or below zero is not evidence, however good the point estimate
    assert decide(_over_rule(0.0), RULE_CHAMPION, GateConfig()).decision == "rejected"
    assert decide(_over_rule(-0.004), RULE_CHAMPION, GateConfig()).decision == "rejected"


def test_every_challenger_needs_the_evidence_even_against_a_trained_champion() -> None:
    ppo_champion = _eval(0.09, dr=0.045, lower=0.03)
    assert decide(_over_rule(0.004), ppo_champion, GateConfig()).decision == "promoted"
    assert decide(_over_rule(None), ppo_champion, GateConfig()).decision == "rejected"
    assert decide(_over_rule(-0.001), ppo_champion, GateConfig()).decision == "rejected"


def test_the_evidence_can_be_recorded_without_being_required() -> None:
    lenient = GateConfig(require_evidence_over_baseline=False)
    d = decide(_over_rule(None), RULE_CHAMPION, lenient)
    assert d.decision == "promoted"
    assert _evidence(d).inconclusive and "not required" in _evidence(d).detail
    assert "[n/a]" in d.describe()


# --- path b: the response model's bootstrap refits --------------------------------------------------

CONFIDENT = tuple(0.002 + 0.0005 * k for k in range(16))  # every refit says the challenger is better
UNSURE = (-0.003, -0.001, *CONFIDENT[2:])  # two refits in 16 say worse: the 5% quantile is below 0


def test_model_evidence_promotes_where_the_logs_are_too_thin() -> None:
    # the logs' paired difference over the rule, [-0.01, +0.01] on an effective 108: no evidence, no contradiction
    thin = _with_model(_over_rule(-0.01, ess=108.0), *CONFIDENT)
    d = decide(thin, RULE_CHAMPION, GateConfig())
    assert d.decision == "promoted", d.describe()
    assert not _evidence(d).passed and _model_evidence(d).passed
    assert "16 refits" in _model_evidence(d).detail and "5% quantile +0.002" in _model_evidence(d).detail
    assert decide(_with_model(_over_rule(0.004, ess=108.0), *UNSURE), RULE_CHAMPION, GateConfig()).decision == (
        "rejected"
    )
    # without logs there is nothing to contradict the model either
    assert decide(_with_model(_over_rule(None), *CONFIDENT), RULE_CHAMPION, GateConfig()).promoted


def test_logs_that_show_the_challenger_worse_veto_the_model_evidence() -> None:
    worse = _with_model(_over_rule(-0.03), *CONFIDENT)  # paired DR [-0.03, -0.01]: clearly worse than the rule
    d = decide(worse, RULE_CHAMPION, GateConfig())
    assert d.decision == "rejected"
    assert not _model_evidence(d).passed and "the logs contradict it" in _model_evidence(d).detail


def test_model_evidence_round_trips_through_the_stored_layout() -> None:
    stored = _with_model(_over_rule(0.004), *CONFIDENT) | {"users": 600, "env_steps_per_second": 900.0}
    stored |= {"model_evidence": {
        "difference": 0.005, "refit_differences": list(CONFIDENT), "seconds": 2.5,
        "training_offers": 120_000}}  # fmt: skip
    evaluation = ChallengerEvaluation.from_json(stored)
    assert evaluation.model_evidence is not None and evaluation.model_evidence.refit_differences == CONFIDENT
    assert evaluation.model_evidence.quantile(0.5) == pytest.approx(0.00575)
    assert evaluation.to_json() == stored
