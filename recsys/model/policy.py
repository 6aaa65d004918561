"""The batch policy API: a trained PPO model as a `Policy`, scoring many users per forward pass.

`PPOPolicy.probabilities(obs, mask)` runs the actor network once per chunk of users (batched
torch, no gradient), masks the logits of actions a user cannot receive to -inf before the softmax
(never after the fact), and returns each action's probability. `choose()` (recsys.model.baselines) turns
that into actions. The campaign writer, `recsys recommend` and evaluation all go through here: there
is no per-user `model.predict` loop anywhere.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.config.catalog import Catalog
from recsys.errors import RecsysError
from recsys.model.observation import N_FEATURES, columns_of_width

CHUNK = 65_536


def set_torch_threads() -> None:
    """One torch thread per process: on 2 cores, small MLPs run many times faster than with two."""
    import torch

    torch.set_num_threads(1)


def load_sb3_model(artifact: bytes | Path) -> Any:
    """A Stable-Baselines3 PPO model from zip bytes or a path, on the CPU."""
    set_torch_threads()
    from stable_baselines3 import PPO

    source: Any = io.BytesIO(artifact) if isinstance(artifact, bytes | bytearray) else Path(artifact)
    try:
        return PPO.load(source, device="cpu")
    except (OSError, ValueError, KeyError) as e:
        where = "the registered artifact" if isinstance(artifact, bytes | bytearray) else str(artifact)
        raise RecsysError(f"cannot load a PPO model from {where}: {e}") from e


def _inputs_of(model: Any) -> np.ndarray | None:
    """The feature columns of a saved model known only by its input width (a zip holds no feature
    set): today's observation, or the earlier set of that width."""
    shape = tuple(model.observation_space.shape)
    if len(shape) != 1:
        raise RecsysError(f"the model reads observations of shape {shape}, not a feature vector")
    return columns_of_width(shape[0])


def actor_logits(policy: Any, x: Any) -> Any:
    """The actor's action logits of an SB3 `ActorCriticPolicy` for a float32 tensor of observations:
    SB3's get_distribution without building a distribution object, and without the critic."""
    from stable_baselines3.common.policies import ActorCriticPolicy

    features = super(ActorCriticPolicy, policy).extract_features(x, policy.pi_features_extractor)
    return policy.action_net(policy.mlp_extractor.forward_actor(features))


@dataclass
class PPOPolicy:
    """A trained PPO actor as a `Policy` (see recsys.model.baselines).

    `action_ids` maps the model's outputs to the running catalog's actions (`recsys.config.catalog.
    action_mapping`): a model trained on a smaller catalog scores on one that contains it, and an
    action it was not trained on (the rest, a new offer) is never chosen (probability 0). None: the
    model was trained on this very catalog.

    `feature_columns` likewise maps today's observation to the model's inputs: a model trained on
    an earlier feature set reads its own columns (`recsys.model.observation.feature_columns`).
    None: it reads today's observation as it is.
    """

    model: Any
    catalog: Catalog
    name: str = "ppo"
    action_ids: np.ndarray | None = None
    feature_columns: np.ndarray | None = None

    @classmethod
    def from_file(cls, path: Path, catalog: Catalog) -> PPOPolicy:
        """A saved SB3 zip (`recsys train --save`) as a policy. The zip holds no catalog: a model
        with one output per offer of a catalog with the rest is taken as trained on those offers
        without the rest (the offers keep their ids), and never rests."""
        model = load_sb3_model(path)
        ids = None
        if catalog.rest_action and int(model.action_space.n) == catalog.n_offers:
            ids = np.arange(catalog.n_offers)
        return cls(model, catalog, name=str(path), action_ids=ids, feature_columns=_inputs_of(model))

    def __post_init__(self) -> None:
        inputs = N_FEATURES if self.feature_columns is None else len(self.feature_columns)
        if tuple(self.model.observation_space.shape) != (inputs,):
            raise RecsysError(
                f"the model reads {self.model.observation_space.shape} observations, not ({inputs},): "
                "it was trained on another feature set"
            )
        n = int(self.model.action_space.n)
        if self.action_ids is None:
            if n != self.catalog.n_actions:
                raise RecsysError(
                    f"the model chooses among {n} actions but the catalog has {self.catalog.n_actions}: "
                    "it was trained on another catalog (pass its action mapping)"
                )
            return
        ids = np.asarray(self.action_ids, dtype=np.int64)
        if ids.shape != (n,) or len(np.unique(ids)) != n or ids.min() < 0 or ids.max() >= self.catalog.n_actions:
            raise RecsysError(
                f"the model chooses among {n} actions but its action mapping has shape {ids.shape} "
                f"or ids outside 0..{self.catalog.n_actions - 1} / repeated"
            )
        self.action_ids = None if n == self.catalog.n_actions and (ids == np.arange(n)).all() else ids

    def _masked_log_probs(
        self, obs: np.ndarray, mask: np.ndarray, chunk: int | None = None
    ) -> Iterator[tuple[int, Any]]:
        """(start row, masked log-probabilities as a float32 torch tensor) per chunk of users."""
        import torch

        chunk = chunk or CHUNK
        policy = self.model.policy
        policy.set_training_mode(False)
        with torch.no_grad():
            for lo in range(0, len(obs), chunk):
                part = obs[lo : lo + chunk]
                if self.feature_columns is not None:  # a model of an earlier feature set: its columns
                    part = part[:, self.feature_columns]
                x = torch.as_tensor(np.asarray(part, dtype=np.float32))
                logits = actor_logits(policy, x)
                part = np.asarray(mask[lo : lo + chunk], dtype=bool)
                if self.action_ids is not None:  # the model's own actions, in its order
                    part = part[:, self.action_ids]
                allowed = torch.as_tensor(part)
                logits = logits.masked_fill(~allowed, float("-inf"))
                yield lo, torch.log_softmax(logits, dim=1)

    def _probabilities_of(self, log_probs: Any) -> np.ndarray:
        """float64 (rows, n_actions) of one chunk's masked log-probabilities (see `probabilities`)."""
        probs = np.nan_to_num(log_probs.exp().double().numpy(), copy=False, nan=0.0)
        if self.action_ids is None:
            return probs
        out = np.zeros((len(probs), self.catalog.n_actions), dtype=np.float64)
        out[:, self.action_ids] = probs
        return out

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Softmax over the allowed actions' logits; all zeros for a user with no allowed action.

        Returns the whole (n, n_actions) matrix: for evaluation-sized batches. Scoring uses `act`.
        """
        out = np.zeros((len(obs), self.catalog.n_actions), dtype=np.float64)
        for lo, log_probs in self._masked_log_probs(obs, mask):
            probs = self._probabilities_of(log_probs)
            out[lo : lo + len(probs)] = probs
        return out

    def _greedy_of(self, log_probs: Any, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`act` on one chunk's masked log-probabilities and the chunk's mask."""
        import torch

        best, index = torch.max(log_probs, dim=1)
        actions = index.numpy().astype(np.int64, copy=False)
        chosen = best.exp().double().numpy()
        known = np.asarray(mask, dtype=bool)
        if self.action_ids is not None:
            actions = self.action_ids[actions]
            known = known[:, self.action_ids]
        empty = ~np.isfinite(chosen) | ~known.any(axis=1)
        actions[empty] = -1
        chosen[empty] = 0.0
        return actions, chosen

    def act(self, obs: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The greedy allowed action per user and the policy's probability of it, chunk by chunk
        (never the whole probability matrix). -1 / 0.0 for a user with no allowed action."""
        actions = np.empty(len(obs), dtype=np.int64)
        chosen = np.empty(len(obs), dtype=np.float64)
        for lo, log_probs in self._masked_log_probs(obs, mask):
            hi = lo + len(log_probs)
            actions[lo:hi], chosen[lo:hi] = self._greedy_of(log_probs, mask[lo:hi])
        return actions, chosen

    def act_with_probabilities(
        self, obs: np.ndarray, mask: np.ndarray, chunk: int
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Per chunk of `chunk` users, one forward pass for both: (start row, the greedy actions
        `act` gives them, the probabilities `probabilities` gives them). For scoring with the
        champion as its own explorer (recsys.campaign.explore)."""
        for lo, log_probs in self._masked_log_probs(obs, mask, chunk):
            hi = lo + len(log_probs)
            actions, _ = self._greedy_of(log_probs, mask[lo:hi])
            yield lo, actions, self._probabilities_of(log_probs)
