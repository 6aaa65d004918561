"""Typed evaluation results: what training measured about a challenger and the champion, and what
the gate concluded. Frozen, so a result cannot change on its way from training to the gate to the
registry; `to_json` gives the documented layout of `policy_models.evaluation` and `gate_reasons`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

GateVerdict = Literal["bootstrap", "promoted", "rejected"]
"""bootstrap: the first champion; promoted: it replaces the champion; rejected: the champion stays."""

PROMOTED_VERDICTS: tuple[GateVerdict, ...] = ("bootstrap", "promoted")


@dataclass(frozen=True)
class OffPolicyValue:
    """A doubly robust estimate on the logged offers, with its bootstrap interval."""

    value: float
    lower: float
    upper: float
    effective_sample_size: float | None = None
    """Kish's effective sample size of the importance weights (None for a paired difference)."""


@dataclass(frozen=True)
class WarmStart:
    """What the supervised warm start of a retrained actor did (`train.warm_start_actor`)."""

    examples: int
    steps: int
    epochs: float = 0.0
    final_loss: float | None = None
    agreement: float | None = None
    """Share of tonight's sample on which the actor's greedy offer is the response model's best."""
    seconds: float = 0.0


@dataclass(frozen=True)
class ChampionEvaluation:
    """The champion, measured on the same users, night and response model as the challenger."""

    simulator_value: float
    dr: OffPolicyValue | None = None


@dataclass(frozen=True)
class ChallengerEvaluation:
    """A trained model's evaluation: simulator values (the night's users under the response model)
    and, once offers are logged, doubly robust estimates on the logs, paired with the champion."""

    simulator_value: float
    """Mean expected reward per user of the policy's greedy offer under the response model."""
    random_value: float
    """The same for uniform random over each user's allowed offers."""
    users: int = 0
    env_steps_per_second: float | None = None
    warm_start: WarmStart | None = None
    dr: OffPolicyValue | None = None
    random_dr_value: float | None = None
    dr_diff: OffPolicyValue | None = None
    """Challenger - champion on the same logged rows and resamples."""
    champion: ChampionEvaluation | None = None
    baseline: str | None = None
    """The conservative baseline the challenger is judged against (the rule heuristic's model
    version); None when the catalog cannot express the rule (then the gate has no baseline check)."""
    baseline_diff: OffPolicyValue | None = None
    """Challenger - baseline, doubly robust on the same logged rows and resamples (None without logs)."""

    def to_json(self) -> dict[str, Any]:
        """The flat layout stored in `policy_models.evaluation` (keys as documented for analysts)."""
        out: dict[str, Any] = {
            "simulator_value": self.simulator_value,
            "random_value": self.random_value,
            "users": self.users,
            "env_steps_per_second": self.env_steps_per_second,
        }
        if self.warm_start is not None:
            out["warm_start"] = asdict(self.warm_start)
        if self.champion is not None:
            out["champion_simulator_value"] = self.champion.simulator_value
        if self.dr is not None:
            out |= {
                "dr_value": self.dr.value,
                "dr_lower": self.dr.lower,
                "dr_upper": self.dr.upper,
                "dr_effective_sample_size": self.dr.effective_sample_size,
            }
        if self.dr_diff is not None:
            out |= {"dr_diff_value": self.dr_diff.value, "dr_diff_lower": self.dr_diff.lower}
            out["dr_diff_upper"] = self.dr_diff.upper
        if self.random_dr_value is not None:
            out["random_dr_value"] = self.random_dr_value
        if self.champion is not None and self.champion.dr is not None:
            out["champion_dr_value"] = self.champion.dr.value
            out["champion_dr_lower"] = self.champion.dr.lower
        if self.baseline is not None:
            out["baseline_version"] = self.baseline
        if self.baseline_diff is not None:
            out["baseline_dr_diff_value"] = self.baseline_diff.value
            out["baseline_dr_diff_lower"] = self.baseline_diff.lower
            out["baseline_dr_diff_upper"] = self.baseline_diff.upper
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ChallengerEvaluation:
        """Inverse of `to_json` (a stored evaluation back as a result)."""

        def estimate(prefix: str, ess: str | None = None) -> OffPolicyValue | None:
            value = d.get(f"{prefix}_value")
            if value is None:
                return None
            lower, upper = d.get(f"{prefix}_lower", value), d.get(f"{prefix}_upper", value)
            return OffPolicyValue(value, lower, upper, d.get(ess) if ess else None)

        champion = None
        if d.get("champion_simulator_value") is not None:
            champion = ChampionEvaluation(d["champion_simulator_value"], estimate("champion_dr"))
        warm = d.get("warm_start")
        return cls(
            simulator_value=d["simulator_value"],
            random_value=d["random_value"],
            users=d.get("users", 0),
            env_steps_per_second=d.get("env_steps_per_second"),
            warm_start=WarmStart(**warm) if warm else None,
            dr=estimate("dr", "dr_effective_sample_size"),
            random_dr_value=d.get("random_dr_value"),
            dr_diff=estimate("dr_diff"),
            champion=champion,
            baseline=d.get("baseline_version"),
            baseline_diff=estimate("baseline_dr_diff"),
        )


@dataclass(frozen=True)
class GateCheck:
    """One check of the gate, recorded with its numbers."""

    check: str
    passed: bool
    detail: str
    inconclusive: bool = False
    """Recorded, passes, decided nothing (too little evidence)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.check, "passed": self.passed, "detail": self.detail}
        if self.inconclusive:
            out["inconclusive"] = True
        return out


@dataclass(frozen=True)
class GateDecision:
    decision: GateVerdict
    reasons: tuple[GateCheck, ...]

    @property
    def promoted(self) -> bool:
        return self.decision in PROMOTED_VERDICTS

    def reasons_json(self) -> list[dict[str, Any]]:
        """The checks as stored in `policy_models.gate_reasons`."""
        return [r.to_json() for r in self.reasons]

    def describe(self) -> str:
        lines = [f"gate: {self.decision}"]
        lines += [
            f"  [{'n/a' if r.inconclusive else 'pass' if r.passed else 'FAIL'}] {r.check}: {r.detail}"
            for r in self.reasons
        ]
        return "\n".join(lines)
