"""Training: `recsys train`: retrain or fine-tune PPO, evaluate, gate, register.

1. Tonight's users come from `user_features` as of the training date (their observations are the
   environment's starting states).
2. The response model is estimated from the logged offers (point-in-time features), or is the
   documented business-rule prior when there are none.
3. With no champion for the running catalog (none at all, or one trained on another catalog or
   feature set), the catalog's rule heuristic is registered and crowned first
   (`recsys.evaluation.baseline.crown_baseline`, verdict `bootstrap`): the conservative baseline.
4. PPO (Stable-Baselines3) learns on the vectorised environment: from scratch (`retrain`), or
   continuing a PPO model (`fine_tune`, `reset_num_timesteps=False`): the champion, or, while the
   champion is the rule heuristic, the newest PPO model registered for the catalog. `auto`
   fine-tunes when there is such a model, and retrains otherwise. A retrain's actor first imitates
   the response model's best offer for one night (`warm_start_actor`, supervised); PPO then
   optimises the multi-night return from there instead of from a uniform policy.
5. The challenger, the champion and the rule heuristic are evaluated on the same users with the
   same response model (and off-policy on the logs when there are any); the gate decides; the
   model is registered with its artifact either way. `--save` also writes the SB3 zip.

One seed feeds Python's, numpy's and torch's generators, the environment and PPO, and is stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.config import Config
from recsys.config.catalog import Catalog
from recsys.config.settings import Settings
from recsys.data.states import load_states
from recsys.db import Connection
from recsys.errors import RecsysError
from recsys.evaluation.baseline import conservative_baseline, crown_baseline
from recsys.evaluation.challenger import evaluate_challenger
from recsys.evaluation.gate import GateConfig, decide
from recsys.evaluation.registry import PPO as PPO_ALGORITHM
from recsys.evaluation.registry import (
    ModelRecord,
    catalog_json,
    champion,
    load_ppo_model,
    record_decision,
    register,
)
from recsys.evaluation.results import (
    ChallengerEvaluation,
    GateDecision,
    WarmStart,
)
from recsys.model.contact_rules import ContactRules
from recsys.model.observation import States, feature_fingerprint
from recsys.model.policy import PPOPolicy, set_torch_threads
from recsys.orchestration.train_mode import fine_tune_parent, no_champion_reason, resolve_mode
from recsys.orchestration.warm_start import warm_start_actor

if TYPE_CHECKING:  # imported where used: stable_baselines3 and the environment load torch
    from stable_baselines3 import PPO

    from recsys.model.response import ResponseModel
    from recsys.model.response_refit import BootstrapSample
    from recsys.model.vec_env import OfferVecEnv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """PPO hyperparameters and the environment's shape. Defaults suit nightly runs on 2 cores.

    Frozen: a variant is `dataclasses.replace(TrainConfig(), total_timesteps=...)`."""

    total_timesteps: int = 200_000
    """Environment steps to learn for (user-nights); fine-tunes add to the parent's count."""
    n_envs: int = 256
    """Users stepped in parallel by the vectorised environment."""
    n_steps: int = 16
    """Steps per environment per rollout (rollout = n_envs x n_steps samples)."""
    batch_size: int = 1024
    """Minibatch size of each gradient step."""
    n_epochs: int = 10
    """Passes over each rollout: the rewards are nearly immediate, so each rollout has much to teach."""
    learning_rate: float = 3e-4
    """Adam learning rate."""
    gamma: float = 0.7
    """Discount per night. An offer's fatigue weighs on the user's next 7 nights, and the gate judges
    rests by the value per user-night over the horizon, undiscounted; at 0.5 those later nights
    counted for about one night in all. Measured over 30 simulated nights, 3 seeds
    (docs/decision-quality.md): at 0.7 the policy sends 8% to 38% fewer offers for the same value
    under the shipped cap and at least the same with the cap at 7 a week; at 0.9 it rests so much
    that under the shipped cap it loses value."""
    gae_lambda: float = 0.9
    """GAE smoothing."""
    clip_range: float = 0.2
    """PPO clipping of the policy ratio."""
    ent_coef: float = 0.001
    """Entropy bonus: a little exploration of the 108 actions, without flattening the policy."""
    vf_coef: float = 0.5
    """Value-loss weight."""
    net_arch: tuple[int, ...] = (64, 64)
    """Hidden layers of the actor and of the critic."""
    horizon: int = 7
    """Nights per episode (one user followed for a week)."""
    contact_rules: bool = False
    """Whether PPO learns in nights that apply the campaign's frequency caps and cooldown (a user
    they block is skipped that night, and the step is the user's next open night). Off by default:
    measured over 30 simulated nights under the shipped cap (docs/decision-quality.md), the policy
    learnt with the rules was worth less under the truth than the one learnt without them. The
    gate's and the evaluation's rollouts over the horizon apply the rules either way."""
    warm_start_steps: int = 3_000
    """Retrain only: gradient steps (minibatches of 512) of supervised imitation of the response
    model's one-night best offer before PPO (0: PPO starts from a uniform policy). On 20k users
    (bench/bench_policy.py), PPO from a uniform policy got a sixth to two thirds of that offer's value
    under the truth in 300k steps; started from it, PPO keeps it."""
    warm_start_users: int = 50_000
    """Users (a random sample of tonight's) the warm start imitates; each also appears once with
    recent offers (fatigue), so the actor has seen states PPO will visit."""
    warm_start_learning_rate: float = 1e-3
    """Adam learning rate of the warm start."""
    seed: int = 0
    """The one seed for everything."""

    def with_overrides(self, *, total_timesteps: int | None = None, seed: int | None = None) -> TrainConfig:
        """This configuration with the run's step budget and seed where given."""
        changes = {"total_timesteps": total_timesteps, "seed": seed}
        return replace(self, **{k: int(v) for k, v in changes.items() if v is not None})

    def ppo_kwargs(self) -> dict[str, Any]:
        return {
            "n_steps": self.n_steps,
            "batch_size": self.batch_size,
            "n_epochs": self.n_epochs,
            "learning_rate": self.learning_rate,
            "gamma": self.gamma,
            "gae_lambda": self.gae_lambda,
            "clip_range": self.clip_range,
            "ent_coef": self.ent_coef,
            "vf_coef": self.vf_coef,
        }


@dataclass(frozen=True)
class TrainResult:
    record: ModelRecord
    decision: GateDecision
    evaluation: ChallengerEvaluation
    saved_to: Path | None = None
    mode_reason: str = ""
    """Why this training mode (e.g. the champion is the rule heuristic: fine-tuning the newest PPO model)."""
    baseline: tuple[ModelRecord, GateDecision] | None = None
    """The rule heuristic crowned before this training (no champion for the catalog), if it was."""

    def describe(self) -> str:
        e = self.evaluation
        lines = []
        if self.baseline is not None:
            crowned, verdict = self.baseline
            lines += [f"conservative baseline {crowned.model_version} (the rule heuristic)", verdict.describe()]
        lines += [
            f"model {self.record.model_version} ({self.record.training_mode}"
            + (f" of {self.record.parent_version}" if self.record.parent_version else "")
            + f", {self.record.total_timesteps:,} timesteps, {self.record.train_seconds:.0f} s)",
            f"  simulator value per user-night: policy {e.simulator_value:.5f}, random {e.random_value:.5f}"
            + (f", champion {e.champion.simulator_value:.5f}" if e.champion is not None else ""),
            self.decision.describe(),
        ]
        if self.mode_reason:
            lines.insert(len(lines) - 2, f"  mode: {self.record.training_mode} because {self.mode_reason}")
        warm = e.warm_start
        if warm is not None and warm.examples:
            lines.insert(
                len(lines) - 2,
                f"  warm start: {warm.steps:,} steps on {warm.examples:,} examples; the actor then took the "
                f"response model's best offer for {warm.agreement or 0.0:.0%} of tonight's sample",
            )
        if self.saved_to:
            lines.append(f"saved to {self.saved_to}")
        return "\n".join(lines)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _make_vec_env(
    states: States, response: ResponseModel, config: TrainConfig, rules: ContactRules | None
) -> OfferVecEnv:
    from recsys.model.vec_env import OfferVecEnv

    return OfferVecEnv(
        response,
        states.obs,
        states.channel_ok,
        num_envs=config.n_envs,
        horizon=config.horizon,
        rules=rules,
        seed=config.seed,
    )


def _window_date(response: ResponseModel, key: str) -> dt.date | None:
    """A send date of the logged offers the response model learned from (None for the prior)."""
    value = (response.fit_report.get("window") or {}).get(key)
    return dt.date.fromisoformat(value) if value else None


def _champion_of_catalog(
    conn: Connection,
    catalog: Catalog,
    as_of: dt.date,
    states: States,
    response: ResponseModel,
    seed: int,
    gate: GateConfig,
    contact: ContactRules,
) -> tuple[ModelRecord | None, tuple[ModelRecord, GateDecision] | None]:
    """(the champion, the rule heuristic if it was crowned now): with no champion for the running
    catalog, the rule heuristic is registered and crowned first (`crown_baseline`)."""
    current = champion(conn)
    gap = no_champion_reason(current, catalog)
    if not gap:
        return current, None
    crowned = crown_baseline(
        conn,
        catalog,
        as_of=as_of,
        states=states,
        response=response,
        seed=seed,
        reason=gap,
        max_decisions=gate.off_policy_max_decisions,
        contact_rules=contact,
    )
    return (crowned[0] if crowned is not None else current), crowned


def train(
    conn: Connection,
    settings: Settings,
    *,
    config: Config,
    as_of: dt.date,
    mode: str = "auto",
    train_config: TrainConfig | None = None,
    save: Path | None = None,
    progress_bar: bool = False,
    gate: GateConfig | None = None,
) -> TrainResult:
    """Train, evaluate, gate and register one model under the product configuration `config`
    (catalog and reward rules). Commits the registry rows."""
    from stable_baselines3 import PPO

    from recsys.data.logged_offers import fit_response_model_with_bootstrap

    hyper = train_config or TrainConfig()
    gate = gate or config.gate
    set_torch_threads()
    seed_everything(hyper.seed)
    catalog = config.catalog
    states = load_states(conn, as_of, max_users=config.learning.max_users, seed=hyper.seed)
    if len(states) == 0:
        raise RecsysError(f"no user features as of {as_of}: run `recsys features --as-of {as_of}` first")
    response, bootstrap = fit_response_model_with_bootstrap(
        conn, settings, catalog, config.reward, as_of, seed=hyper.seed, config=config.learning
    )
    contact = ContactRules.of(config.rules)
    current, crowned = _champion_of_catalog(conn, catalog, as_of, states, response, hyper.seed, gate, contact)
    parent = fine_tune_parent(conn, current, catalog)
    mode, why = resolve_mode(mode, current, catalog, parent)
    log.info("train: %s (%s) on %d users as of %s", mode, why, len(states), as_of)

    warm_start: WarmStart | None = None
    env = _make_vec_env(states, response, hyper, contact if hyper.contact_rules else None)
    started = time.perf_counter()
    if mode == "fine_tune":
        assert parent is not None
        model = load_ppo_model(parent)
        model.set_env(env)
        model.set_random_seed(hyper.seed)
        model.learn(total_timesteps=hyper.total_timesteps, reset_num_timesteps=False, progress_bar=progress_bar)
    else:
        model = PPO(
            "MlpPolicy",
            env,
            seed=hyper.seed,
            device="cpu",
            policy_kwargs={"net_arch": list(hyper.net_arch)},
            verbose=0,
            **hyper.ppo_kwargs(),
        )
        warm_start = warm_start_actor(model, states, response, catalog, hyper)
        log.info("train: warm start %s", warm_start)
        model.learn(total_timesteps=hyper.total_timesteps, progress_bar=progress_bar)
    seconds = time.perf_counter() - started
    result = register_challenger(
        conn,
        model,
        as_of=as_of,
        mode=mode,
        states=states,
        response=response,
        catalog=catalog,
        current=current,
        config=hyper,
        seconds=seconds,
        gate=gate,
        save=save,
        warm_start=warm_start,
        parent=parent if mode == "fine_tune" else None,
        bootstrap=bootstrap,
        contact=contact,
    )
    result = replace(result, mode_reason=why, baseline=crowned)
    log.info("%s", result.describe())
    return result


def _refits(
    bootstrap: BootstrapSample | None, response: ResponseModel, gate: GateConfig, *, seed: int
) -> Iterator[ResponseModel] | tuple[()]:
    """The refits of evidence path b, warm-started from the night's fit (same optimum, fewer
    steps), each on at most about `gate.model_evidence_max_offers` offers; none when its training
    offers are fewer than `gate.model_evidence_min_offers` (the gate then records why path b
    cannot pass, without paying for refits it would not count)."""
    if bootstrap is None or bootstrap.offers < gate.model_evidence_min_offers:
        return ()
    return bootstrap.refits(
        gate.model_evidence_refits, seed=seed, start=response, max_offers=gate.model_evidence_max_offers
    )


def register_challenger(
    conn: Connection,
    model: PPO,
    *,
    as_of: dt.date,
    mode: str,
    states: States,
    response: ResponseModel,
    catalog: Catalog,
    current: ModelRecord | None,
    config: TrainConfig,
    seconds: float,
    gate: GateConfig,
    save: Path | None = None,
    warm_start: WarmStart | None = None,
    parent: ModelRecord | None = None,
    bootstrap: BootstrapSample | None = None,
    contact: ContactRules | None = None,
) -> TrainResult:
    """Evaluate a trained model next to random, the conservative baseline and the champion (also
    under `gate.model_evidence_refits` refits of the response model on `bootstrap`, the training
    offers of its fit, once they number `gate.model_evidence_min_offers`), run the gate, register
    it (`parent`: the PPO model a fine-tune continued; `contact`: the campaign's caps and cooldown
    in the horizon's rollouts). Commits."""
    if parent is None and mode == "fine_tune" and current is not None and current.algorithm.upper() == PPO_ALGORITHM:
        parent = current
    buffer = io.BytesIO()
    model.save(buffer)
    artifact = buffer.getvalue()

    evaluation = replace(
        evaluate_challenger(
            conn,
            PPOPolicy(model, catalog),
            as_of=as_of,
            states=states,
            response=response,
            catalog=catalog,
            current=current,
            seed=config.seed,
            baseline=conservative_baseline(catalog),
            refits=_refits(bootstrap, response, gate, seed=config.seed),
            training_offers=bootstrap.offers if bootstrap is not None else 0,
            horizon=(gate.horizon_nights, gate.horizon_users),
            max_decisions=gate.off_policy_max_decisions,
            contact_rules=contact,
        ),
        env_steps_per_second=config.total_timesteps / seconds if seconds > 0 else None,
        warm_start=warm_start,
    )
    decision = decide(evaluation, evaluation.champion, gate)

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    record = ModelRecord(
        model_version=f"ppo-{stamp}-{hashlib.sha256(artifact).hexdigest()[:8]}",
        parent_version=parent.model_version if mode == "fine_tune" and parent else None,
        algorithm=PPO_ALGORITHM,
        training_mode=mode,
        hyperparameters={**asdict(config), "net_arch": list(config.net_arch)},
        seed=config.seed,
        catalog_fingerprint=catalog.fingerprint(),
        feature_fingerprint=feature_fingerprint(),
        catalog=catalog_json(catalog),
        trained_on=as_of,
        total_timesteps=int(model.num_timesteps),
        artifact=artifact,
        train_seconds=seconds,
        training_window_start=_window_date(response, "first_send_date"),
        training_window_end=_window_date(response, "last_send_date"),
        response_model=response.to_dict(),
        evaluation=evaluation.to_json(),
    )
    register(conn, record)
    record_decision(
        conn,
        record.model_version,
        decision=decision.decision,
        reasons=decision.reasons_json(),
        evaluation=record.evaluation,
    )
    conn.commit()
    record.gate_decision = decision.decision
    record.is_champion = decision.promoted
    return TrainResult(record, decision, evaluation, _save_artifact(artifact, save))


def _save_artifact(artifact: bytes, save: Path | None) -> Path | None:
    """Write the SB3 zip to `save` (".zip" added when missing); the path written, or None."""
    if save is None:
        return None
    saved = save if save.suffix == ".zip" else save.with_name(save.name + ".zip")
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_bytes(artifact)
    return saved
