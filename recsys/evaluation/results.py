"""Typed evaluation results: what training measured about a challenger and the champion, and what
the gate concluded. Frozen, so a result cannot change on its way from training to the gate to the
registry; `to_json` gives the documented layout of `policy_models.evaluation` and `gate_reasons`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

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
    """What the supervised warm start of a retrained actor did (`recsys.orchestration.warm_start.warm_start_actor`)."""

    examples: int
    steps: int
    epochs: float = 0.0
    final_loss: float | None = None
    agreement: float | None = None
    """Share of tonight's sample on which the actor's greedy offer is the response model's best."""
    seconds: float = 0.0


@dataclass(frozen=True)
class ModelEvidence:
    """Challenger - conservative baseline under the response model: the difference of the mean
    expected reward per user of each one's greedy offer on tonight's users, under the night's model
    and under each of its bootstrap refits (`recsys.evaluation.model_evidence`). The refits' spread
    is the fit's estimation uncertainty, not the error of the model's structure."""

    difference: float
    """Under the night's response model."""
    refit_differences: tuple[float, ...]
    """Under each refit on a resample of the training users (empty: no refits)."""
    seconds: float = 0.0
    """What the refits and their values took."""
    training_offers: int | None = None
    """How many logged offers the night's fit trained on (None: not recorded, evaluations stored
    before it was): the gate counts this path only from `GateConfig.model_evidence_min_offers`."""

    def quantile(self, q: float) -> float:
        """The `q` quantile of the refits' differences (nan without refits)."""
        return float(np.quantile(self.refit_differences, q)) if self.refit_differences else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "difference": self.difference,
            "refit_differences": list(self.refit_differences),
            "seconds": self.seconds,
            "training_offers": self.training_offers,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelEvidence:
        return cls(
            d["difference"], tuple(d.get("refit_differences", ())), d.get("seconds", 0.0), d.get("training_offers")
        )


@dataclass(frozen=True)
class HorizonValue:
    """A value per user-night over the horizon in the simulator, with its bootstrap interval over users."""

    value: float
    lower: float
    upper: float

    def describe(self) -> str:
        return f"{self.value:+.5f} [{self.lower:+.5f}, {self.upper:+.5f}]"


@dataclass(frozen=True)
class HorizonEvaluation:
    """Policies followed over `nights` nights in the response model's simulator on the same users
    and draws (`recsys.evaluation.horizon.horizon_values`): what judges the rests."""

    nights: int
    users: int
    values: dict[str, HorizonValue]
    """Per policy (challenger, challenger_offering, champion, random): mean reward per user-night."""
    differences: dict[str, HorizonValue]
    """Paired differences on the same users and draws: vs_champion (challenger - champion),
    rests (challenger - challenger_offering: what its rests add over its best offers)."""
    rest_share: dict[str, float]
    """Per policy: share of user-nights rested."""

    def to_json(self) -> dict[str, Any]:
        return {
            "nights": self.nights,
            "users": self.users,
            "values": {k: asdict(v) for k, v in self.values.items()},
            "differences": {k: asdict(v) for k, v in self.differences.items()},
            "rest_share": dict(self.rest_share),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HorizonEvaluation:
        return cls(
            nights=int(d["nights"]),
            users=int(d["users"]),
            values={k: HorizonValue(**v) for k, v in d.get("values", {}).items()},
            differences={k: HorizonValue(**v) for k, v in d.get("differences", {}).items()},
            rest_share={k: float(v) for k, v in d.get("rest_share", {}).items()},
        )


ONE_NIGHT_OFFERS_ONLY = (
    "the choice among offers: every policy conditioned on offering (where it rests, its best offer), "
    "in the one-night simulator, on the logs and under the response model's refits"
)
"""What the one-night values judge when the catalog has the rest (`ChallengerEvaluation.judged`)."""

HORIZON_JUDGES = "the rests: each policy with its rests, followed over the horizon in the simulator"
"""What the horizon values judge (`ChallengerEvaluation.judged`)."""


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
    model_evidence: ModelEvidence | None = None
    """Challenger - baseline under the response model and its bootstrap refits (None: not measured)."""
    horizon: HorizonEvaluation | None = None
    """The challenger with its rests, next to itself always offering, the champion and random,
    over the horizon in the simulator (None: the catalog has no rest, nothing to judge there).
    With it, the one-night values above are those of the policies conditioned on offering."""

    @property
    def judged(self) -> dict[str, str]:
        """Which values judged what: with the rest, one night judges the choice among offers and
        the horizon the rests; without it, one night judges everything."""
        if self.horizon is None:
            return {"one_night": "every decision (the catalog has no rest)"}
        return {"one_night": ONE_NIGHT_OFFERS_ONLY, "horizon": HORIZON_JUDGES}

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
        if self.model_evidence is not None:
            out["model_evidence"] = self.model_evidence.to_json()
        if self.horizon is not None:
            out["horizon"] = self.horizon.to_json()
            out["judged"] = self.judged
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
        warm, model, horizon = d.get("warm_start"), d.get("model_evidence"), d.get("horizon")
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
            model_evidence=ModelEvidence.from_json(model) if model else None,
            horizon=HorizonEvaluation.from_json(horizon) if horizon else None,
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
