"""The promotion gate: a challenger becomes champion only if it is not worse than the champion.

Checks, in order (each recorded with its numbers on the model row):
1. sanity: the challenger beats uniform random in the simulator (otherwise it learned nothing),
   and, once logged offers exist, it is not clearly worse than random off-policy: the upper end of
   its doubly robust interval on the logs reaches random's estimate (a policy that only exploits
   the simulator's mistakes fails here; noise alone does not). The logs judge only when the
   challenger's estimate rests on enough of them (`min_effective_sample_size`); otherwise the check
   is recorded as inconclusive and the simulator decides;
2. with no champion yet, a sane challenger becomes the first champion (`bootstrap`);
3. simulator value: challenger >= champion - margin x |champion| on the same users, same night and
   same response model;
4. once logged offers exist, off-policy on the logs: the paired doubly robust difference
   challenger - champion (same rows, same resamples) is not clearly negative: the upper end of its
   interval >= -margin x |champion's estimate|. The simulator decides who is better; the logs can
   veto a challenger they show to be worse.
A challenger that fails any check is `rejected` and the champion stays.
"""

from __future__ import annotations

from dataclasses import dataclass

from recsys.evaluation.results import ChallengerEvaluation, ChampionEvaluation, GateCheck, GateDecision

__all__ = ["GateConfig", "GateDecision", "decide"]


@dataclass(frozen=True)
class GateConfig:
    """Promotion thresholds."""

    margin: float = 0.02
    """Relative tolerance: a challenger may be this much worse than the champion and still win."""
    min_effective_sample_size: float = 1_000.0
    """The off-policy check against random needs the challenger's doubly robust estimate to rest on
    at least this many logged decisions (Kish's effective sample size of its importance weights).
    A near-deterministic policy matches few logged offers; when those few happen to hold no
    conversion, the percentile bootstrap cannot resample the conversions they did not show and its
    interval is falsely tight (measured: a first model worth 2x random under the truth came out at
    -0.012 [-0.041, +0.007] against random's +0.014 on 24,497 logged offers, effective sample 226.5)."""


def decide(challenger: ChallengerEvaluation, champion: ChampionEvaluation | None, config: GateConfig) -> GateDecision:
    """The challenger's checks against random and, when there is one, the champion."""
    reasons: list[GateCheck] = []

    def check(name: str, passed: bool, detail: str, *, inconclusive: bool = False) -> bool:
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
    if champion is None:
        return GateDecision("bootstrap" if sane else "rejected", tuple(reasons))
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
    return GateDecision("promoted" if sane and ok else "rejected", tuple(reasons))
