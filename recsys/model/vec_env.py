"""`OfferVecEnv`: many users of the offer environment stepped at once in numpy, as a
Stable-Baselines3 `VecEnv`, on the same dynamics as `recsys.model.env.OfferEnv` (`OfferDynamics`).
Training (`recsys.orchestration.train`) builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from recsys.model.env import ContactRules, OfferDynamics, StepResult, _observation_space
from recsys.model.observation import States
from recsys.model.response import ResponseModel


class OfferVecEnv(VecEnv):
    """`num_envs` users stepped at once in numpy, with auto-reset (the Stable-Baselines3 VecEnv API).

    The same dynamics as `OfferEnv` (one shared `OfferDynamics`): after `seed(s)`, slot i behaves
    exactly like an `OfferEnv` reset with seed s + i and given the same actions, as in SB3's
    `DummyVecEnv`. When a slot's episode ends, its info holds `terminal_observation` and
    `TimeLimit.truncated`, and the returned observation is the next episode's first. The outcome
    arrays of the last step are in `last_step` (infos stay small: building n dicts of outcomes
    would cost more than the step).
    """

    render_mode = None

    def __init__(
        self,
        model: ResponseModel,
        start_obs: np.ndarray,
        channel_ok: np.ndarray | None = None,
        *,
        num_envs: int = 1024,
        horizon: int = 7,
        reward_mode: str = "expected",
        rules: ContactRules | None = None,
        seed: int | None = None,
    ) -> None:
        self._core = OfferDynamics(
            model,
            start_obs,
            channel_ok,
            n=num_envs,
            horizon=horizon,
            reward_mode=reward_mode,
            rules=rules,
            pass_blocked_nights=True,
        )
        self.model = model
        self.horizon = self._core.horizon
        super().__init__(num_envs, _observation_space(), spaces.Discrete(model.n_actions))
        self._actions: np.ndarray | None = None
        self.last_step: StepResult | None = None
        if seed is not None:
            self.seed(seed)

    @classmethod
    def from_states(cls, model: ResponseModel, states: States, **kwargs: Any) -> OfferVecEnv:
        """A vectorised environment starting from the users of `states`."""
        return cls(model, states.obs, states.channel_ok, **kwargs)

    def reset(self) -> np.ndarray:
        core = self._core
        for i in range(self.num_envs):
            if self._seeds[i] is not None or core.rngs[i] is None:
                core.rngs[i] = seeding.np_random(self._seeds[i])[0]
        starts = [self._options[i].get("start_index") for i in range(self.num_envs)]
        core.reset(np.arange(self.num_envs), starts if any(s is not None for s in starts) else None)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{"start_index": int(core.start_index[i]), "night": 0} for i in range(self.num_envs)]
        return core.observations()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs).astype(np.int64, copy=False)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async()")
        core = self._core
        result = core.step(self._actions)
        self._actions = None
        self.last_step = result
        obs = core.observations()
        dones = result.terminated | result.truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        ended = np.flatnonzero(dones)
        if len(ended):
            for i in ended:
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(result.truncated[i])
            core.reset(ended)
            obs[ended] = core.obs[ended]
        return obs, result.reward.astype(np.float32), dones, infos

    def action_masks(self) -> np.ndarray:
        """bool (num_envs, n_actions): the actions each user can receive now."""
        return self._core.action_mask()

    def close(self) -> None:
        """Nothing to release: the simulation is in-process arrays."""

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int | np.integer):
            return [int(indices)]
        return [int(i) for i in indices]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The attribute of the environment, once per index (all slots share one object)."""
        value = getattr(self, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute for all slots (they share one object, so per-slot values are refused)."""
        if indices is not None and sorted(self._indices(indices)) != list(range(self.num_envs)):
            raise ValueError("OfferVecEnv slots share their attributes: set them for all slots at once")
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list:
        """`action_masks` per slot (what sb3-contrib asks for); other methods are called once per index."""
        idx = self._indices(indices)
        if method_name == "action_masks":
            masks = self.action_masks()
            return [masks[i] for i in idx]
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in idx]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]
