"""The promotion gate: a challenger becomes champion only on evidence that it is better than the
conservative baseline (from the logs, or from the response model's bootstrap refits that the logs
do not contradict) and it is not worse than the champion.

A catalog's first champion is not trained: it is the rule heuristic (`recsys.evaluation.baseline`,
verdict `bootstrap`), so a new shop starts with the rule and a trained model must earn its place.
Checks of a challenger, in order (each recorded with its numbers on the model row):
1. sanity: the challenger beats uniform random in the simulator (otherwise it learned nothing),
   and, once logged offers exist, it is not clearly worse than random off-policy: the upper end of
   its doubly robust interval on the logs reaches random's estimate (a policy that only exploits
   the simulator's mistakes fails here; noise alone does not). The logs judge only when the
   challenger's estimate rests on enough of them (`min_effective_sample_size`); otherwise the check
   is recorded as inconclusive and the simulator decides;
2. evidence over the conservative baseline (`require_evidence_over_baseline`), by either of two
   paths, each recorded as its own check:
   a. on the logs: the paired doubly robust difference challenger - rule heuristic (same rows, same
      resamples) has its lower end above 0, on an effective sample of at least
      `min_effective_sample_size` logged decisions;
   b. under the response model, once its night's fit trained on `model_evidence_min_offers` logged
      offers: refitted `model_evidence_refits` times on resamples of its
      training users (`recsys.model.response_refit`), the lower `model_evidence_quantile` of the
      differences challenger - rule (mean expected reward per user of each one's greedy offer on
      tonight's users, `recsys.evaluation.model_evidence`) is above 0, and the logs, when there are
      any, do not contradict it (the paired doubly robust difference's upper end >= 0).
   Path b captures the fit's estimation uncertainty only: a model whose structure is wrong can be
   confidently wrong, and then only the logs' veto (or, once they resolve it, path a) protects.
   Without either, the check fails and the champion stays. (Skipped for a catalog that cannot
   express the rule.)
3. with no champion at all (a catalog without the rule), a challenger that passes becomes the
   first champion (`bootstrap`);
4. simulator value: challenger >= champion - margin x |champion| on the same users, same night and
   same response model;
5. once logged offers exist, off-policy on the logs: the paired doubly robust difference
   challenger - champion (same rows, same resamples) is not clearly negative: the upper end of its
   interval >= -margin x |champion's estimate|. The simulator decides who is better; the logs can
   veto a challenger they show to be worse.
With the rest in the catalog (the evaluation carries `horizon`), checks 1-5 are one-night checks
and judge only the choice among offers: every policy in them is conditioned on offering (where it
rests, its best offer; `recsys.model.baselines.OffersOnly`), because one night values the rest at
exactly 0, below any offer worth anything, and cannot see what resting saves on the nights after.
Their names say so. The rests are judged over the horizon, in the simulator, on the same users and
draws for every policy (`recsys.evaluation.horizon`), with 95% intervals over users:
6. its rests pay: the challenger with its rests - the same challenger always offering is not
   clearly negative (the upper end of the paired interval >= -margin x |the latter's value|); a
   challenger that never rests has nothing to judge here (recorded as inconclusive);
7. with a champion: its value over the horizon, rests included, is not worse than the champion's
   (challenger - champion >= -margin x |champion's value|, the paired interval recorded).
The stored evaluation says which part judged what (`judged`, next to `horizon`).
A challenger that fails any check is `rejected` and the champion stays.
"""

from __future__ import annotations

from collections.abc import Callable

from recsys.config.learning import GateConfig
from recsys.evaluation.results import ChallengerEvaluation, ChampionEvaluation, GateCheck, GateDecision

__all__ = ["GateConfig", "GateDecision", "decide"]

Check = Callable[..., bool]
"""`check(name, passed, detail, *, inconclusive=False)`: record one check, return `passed`."""


def decide(challenger: ChallengerEvaluation, champion: ChampionEvaluation | None, config: GateConfig) -> GateDecision:
    """The challenger's checks against random, the conservative baseline and, when there is one,
    the champion."""
    reasons: list[GateCheck] = []
    # with the rest, the one-night checks judge the choice among offers only: their names say so
    scope = "" if challenger.horizon is None else ONE_NIGHT_SCOPE

    def check(name: str, passed: bool, detail: str, *, inconclusive: bool = False) -> bool:
        reasons.append(GateCheck(name + scope, bool(passed), detail, inconclusive))
        return passed

    def over_horizon(name: str, passed: bool, detail: str, *, inconclusive: bool = False) -> bool:
        reasons.append(GateCheck(name, bool(passed), detail, inconclusive))
        return passed

    sane = check(
        "beats uniform random in the simulator",
        challenger.simulator_value > challenger.random_value,
        f"challenger {challenger.simulator_value:.5f} vs random {challenger.random_value:.5f}",
    )
    dr = challenger.dr
    if dr is not None and challenger.random_dr_value is not None:
        name = "not clearly worse than uniform random off-policy (doubly robust, on the logs)"
        detail = f"challenger {dr.value:.5f} (upper {dr.upper:.5f}) vs random {challenger.random_dr_value:.5f}"
        ess = dr.effective_sample_size
        if ess is not None and ess < config.min_effective_sample_size:
            check(
                name,
                True,
                f"inconclusive, the simulator decides: the estimate rests on an effective "
                f"{ess:,.0f} logged decisions (< {config.min_effective_sample_size:,.0f}); {detail}",
                inconclusive=True,
            )
        else:
            sane = check(name, dr.upper >= challenger.random_dr_value, detail) and sane
    sane = _evidence_over_baseline(challenger, config, check) and sane
    rests_pay = _rests_over_horizon(challenger, config, over_horizon)
    if champion is None:
        return GateDecision("bootstrap" if sane and rests_pay else "rejected", tuple(reasons))
    floor = champion.simulator_value - config.margin * abs(champion.simulator_value)
    ok = check(
        "simulator value not worse than the champion's",
        challenger.simulator_value >= floor,
        f"challenger {challenger.simulator_value:.5f} vs champion {champion.simulator_value:.5f} "
        f"(floor {floor:.5f} at margin {config.margin:.0%})",
    )
    diff = challenger.dr_diff
    if diff is not None:
        # Paired: both policies on the same logged rows and resamples. Comparing two separate
        # intervals instead would favour the champion, whose own offers fill the logs (a tight
        # interval) over any challenger (judged mostly on the exploration offers: a wide one).
        tolerance = config.margin * abs(champion.dr.value if champion.dr is not None else 0.0)
        ok = (
            check(
                "not clearly worse than the champion off-policy (paired doubly robust difference, on the logs)",
                diff.upper >= -tolerance,
                f"challenger - champion {diff.value:+.5f} [{diff.lower:+.5f}, {diff.upper:+.5f}] "
                f"(tolerance {-tolerance:+.5f})",
            )
            and ok
        )
    ok = _horizon_vs_champion(challenger, config, over_horizon) and ok
    return GateDecision("promoted" if sane and ok and rests_pay else "rejected", tuple(reasons))


ONE_NIGHT_SCOPE = " [one night: the choice among offers, rests judged over the horizon]"
"""Appended to the name of each one-night check when the catalog has the rest."""


def _rests_over_horizon(challenger: ChallengerEvaluation, config: GateConfig, check: Check) -> bool:
    """Check 6: the challenger's rests are not clearly worse, over the horizon, than its best offers
    on the same user-nights. Passes without a horizon (no rest in the catalog)."""
    horizon = challenger.horizon
    if horizon is None:
        return True
    name = f"its rests pay over the horizon (simulator, {horizon.nights} nights: with its rests vs always offering)"
    share = horizon.rest_share.get("challenger", 0.0)
    diff, offering = horizon.differences.get("rests"), horizon.values.get("challenger_offering")
    if share <= 0 or diff is None or offering is None:
        check(name, True, f"it rests on no user-night of {horizon.users:,} users: nothing to judge", inconclusive=True)
        return True
    tolerance = config.margin * abs(offering.value)
    return check(
        name,
        diff.upper >= -tolerance,
        f"rests on {share:.1%} of user-nights; value per user-night with its rests - always offering "
        f"{diff.describe()} on {horizon.users:,} users (upper end must be >= {-tolerance:+.5f})",
    )


def _horizon_vs_champion(challenger: ChallengerEvaluation, config: GateConfig, check: Check) -> bool:
    """Check 7: the challenger's value over the horizon, rests included, not worse than the
    champion's. Passes without a horizon or a champion in it."""
    horizon = challenger.horizon
    if horizon is None or "vs_champion" not in horizon.differences or "champion" not in horizon.values:
        return True
    diff, best = horizon.differences["vs_champion"], horizon.values["champion"]
    tolerance = config.margin * abs(best.value)
    share = horizon.rest_share
    return check(
        f"value over the horizon not worse than the champion's (simulator, {horizon.nights} nights, rests included)",
        diff.value >= -tolerance,
        f"challenger - champion {diff.describe()} per user-night on {horizon.users:,} users (must be >= "
        f"{-tolerance:+.5f}); rested user-nights: challenger {share.get('challenger', 0.0):.1%}, "
        f"champion {share.get('champion', 0.0):.1%}",
    )


def _evidence_over_baseline(challenger: ChallengerEvaluation, config: GateConfig, check: Check) -> bool:
    """Check 2: evidence that the challenger is better than the conservative baseline, on the logs
    (path a) or under the response model, not contradicted by the logs (path b). Either suffices;
    each is recorded as its own check."""
    if challenger.baseline is None:
        return True
    name = f"better than the conservative baseline {challenger.baseline} off-policy (paired doubly robust lower bound)"
    logs_passed, logs_detail = _logs_evidence(challenger, config)
    model_name = (
        f"better than the baseline {challenger.baseline} under the response model "
        "(bootstrap refits, not contradicted by the logs)"
    )
    model_passed, model_detail = _model_evidence(challenger, config)
    if not config.require_evidence_over_baseline:
        note = "recorded, not required (require_evidence_over_baseline off): "
        check(name, True, note + logs_detail, inconclusive=True)
        if challenger.model_evidence is not None:
            check(model_name, True, note + model_detail, inconclusive=True)
        return True
    either = "; either path suffices"
    logs_ok = check(name, logs_passed, logs_detail + either)
    model_ok = check(model_name, model_passed, model_detail + either)
    return logs_ok or model_ok


def _logs_evidence(challenger: ChallengerEvaluation, config: GateConfig) -> tuple[bool, str]:
    """Path a: the paired doubly robust lower bound over the baseline > 0, on enough logs."""
    diff, dr = challenger.baseline_diff, challenger.dr
    ess = dr.effective_sample_size if dr is not None else None
    if diff is None or dr is None:
        return False, "no evidence yet: no logged offers to compare it with"
    if ess is None or ess < config.min_effective_sample_size:
        return False, (
            f"no evidence yet: the estimate rests on an effective {ess or 0:,.0f} logged decisions "
            f"(< {config.min_effective_sample_size:,.0f}); challenger - baseline {diff.value:+.5f} "
            f"[{diff.lower:+.5f}, {diff.upper:+.5f}]"
        )
    return diff.lower > 0, (
        f"challenger - baseline {diff.value:+.5f} [{diff.lower:+.5f}, {diff.upper:+.5f}] "
        f"on an effective {ess:,.0f} logged decisions (lower end must be > 0)"
    )


def _model_evidence(challenger: ChallengerEvaluation, config: GateConfig) -> tuple[bool, str]:
    """Path b: the lower `model_evidence_quantile` of the refits' differences challenger - baseline
    > 0, and, when there are logs, the paired doubly robust difference's upper end >= 0."""
    evidence = challenger.model_evidence
    offers = evidence.training_offers if evidence is not None else None
    if evidence is not None and offers is not None and offers < config.model_evidence_min_offers:
        return False, (
            f"no model evidence yet: the night's fit trained on {offers:,} logged offers "
            f"(< model_evidence_min_offers {config.model_evidence_min_offers:,}; on small logs the "
            f"response model can be confidently wrong); challenger - baseline per user "
            f"{evidence.difference:+.5f} under the night's model"
        )
    if evidence is None or not evidence.refit_differences:
        return False, "no model evidence: no refits of the response model (no logged offers, or refits off)"
    q = config.model_evidence_quantile
    lower, upper = evidence.quantile(q), evidence.quantile(1.0 - q)
    passed = lower > 0
    detail = (
        f"challenger - baseline per user {evidence.difference:+.5f} under the night's model; over "
        f"{len(evidence.refit_differences)} refits on resampled users: {q:.0%} quantile {lower:+.5f}, "
        f"{1.0 - q:.0%} quantile {upper:+.5f} (lower must be > 0; {evidence.seconds:.1f} s)"
    )
    diff = challenger.baseline_diff
    if diff is None:
        return passed, detail + "; no logged offers to contradict it"
    contradicted = diff.upper < 0
    detail += (
        f"; the logs {'contradict' if contradicted else 'do not contradict'} it: paired doubly robust "
        f"{diff.value:+.5f} [{diff.lower:+.5f}, {diff.upper:+.5f}] (upper end must be >= 0)"
    )
    return passed and not contradicted, detail
