"""The batch policy API: a trained PPO model as a `Policy`, scoring many users per forward pass.

`PPOPolicy.probabilities(obs, mask)` runs the actor network once per chunk of users (batched
torch, no gradient), masks the logits of actions a user cannot receive to -inf before the softmax
(never after the fact), and returns each action's probability. `choose()` (recsys.baselines) turns
that into actions. The campaign writer, `recsys recommend` and evaluation all go through here: there
is no per-user `model.predict` loop anywhere.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.catalog import Catalog
from recsys.errors import RecsysError

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


@dataclass
class PPOPolicy:
    """A trained PPO actor as a `Policy` (see recsys.baselines)."""

    model: Any
    catalog: Catalog
    name: str = "ppo"

    def __post_init__(self) -> None:
        n = int(self.model.action_space.n)
        if n != self.catalog.n_actions:
            raise RecsysError(
                f"the model chooses among {n} actions but the catalog has {self.catalog.n_actions}: "
                "it was trained on another catalog"
            )

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Unmasked action log-probabilities, float32 (n, n_actions), one forward pass per chunk."""
        import torch

        policy = self.model.policy
        policy.set_training_mode(False)
        out = np.empty((len(obs), self.catalog.n_actions), dtype=np.float32)
        with torch.no_grad():
            for lo in range(0, len(obs), CHUNK):
                x = torch.as_tensor(np.asarray(obs[lo : lo + CHUNK], dtype=np.float32))
                # Categorical logits come back log-softmax normalised: the same softmax after masking.
                out[lo : lo + CHUNK] = policy.get_distribution(x).distribution.logits.numpy()
        return out

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Softmax over the allowed actions' logits; all zeros for a user with no allowed action."""
        logits = self.logits(obs).astype(np.float64)
        logits = np.where(mask, logits, -np.inf)
        top = logits.max(axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        weights = np.exp(logits - top)
        total = weights.sum(axis=1, keepdims=True)
        return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
