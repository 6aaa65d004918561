"""The offer environment: one user over a horizon of nightly offer decisions, simulated.

`OfferEnv` (a `gymnasium.Env`) and `OfferVecEnv` (`recsys.model.vec_env`: a Stable-Baselines3
`VecEnv` stepping many users at once in numpy) share one implementation of the dynamics,
`OfferDynamics`: `OfferEnv` is that core with one user. Users respond as a
`recsys.model.response.ResponseModel` says (fitted on logged offers, or the config's business-rule
priors). Starting states are real rows of `recsys.user_features`
(`recsys.data.states.load_states`), passed in as arrays: the environment never touches the database.

Training (`recsys.orchestration.train`) builds the vectorised environment; evaluation steps either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from recsys.config.catalog import ALLOWED_CHANNELS
from recsys.model.contact_rules import WINDOW_NIGHTS, ContactRules
from recsys.model.observation import FEATURE_NAMES, FEATURES, N_FEATURES, States
from recsys.model.response import ResponseModel

REWARD_MODES = ("expected", "sampled")
"""expected: the expected net value of the chosen offer in the current state; sampled: the realised one."""

# Engagement is 1 - exp(-points / 25), points = views + 3 add-to-carts + 10 purchases in the feature
# window (sql/features/user_features.sql). A click is a session with a view; a conversion adds a
# cart and a purchase.
_ENGAGEMENT_SCALE = 25.0
_CLICK_POINTS = 1.0
_PURCHASE_POINTS = 3.0 + 10.0

ENV_ID = "recsys/Offer-v0"
"""Gymnasium id of `OfferEnv`: `gymnasium.make(ENV_ID, model=..., start_obs=...)`."""

_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
_CONSENT_COLS = np.array([_COL[f"{c}_consent"] for c in ALLOWED_CHANNELS])
DRAWS_PER_NIGHT = 4
"""Uniform numbers per user and night: open, click, convert, unsubscribe (and one per episode for
its starting row): `OfferDynamics.reset` takes 1 + horizon x DRAWS_PER_NIGHT per slot."""
_DRAWS = DRAWS_PER_NIGHT


def _observation_space() -> spaces.Box:
    return spaces.Box(low=0.0, high=1.0, shape=(N_FEATURES,), dtype=np.float32)


def _check_starts(model: ResponseModel, start_obs: np.ndarray, channel_ok: np.ndarray | None) -> tuple:
    obs = np.asarray(start_obs, dtype=np.float64)
    if obs.ndim != 2 or obs.shape[1] != N_FEATURES or len(obs) == 0:
        raise ValueError(f"start_obs must have shape (n >= 1, {N_FEATURES}), got {obs.shape}")
    if not np.isfinite(obs).all() or obs.min() < 0.0 or obs.max() > 1.0:
        raise ValueError("start_obs must be normalised observations in [0, 1] (recsys.model.observation.normalise)")
    if channel_ok is None:
        ok = obs[:, _CONSENT_COLS] >= 0.5
    else:
        ok = np.asarray(channel_ok, dtype=bool)
        if ok.shape != (len(obs), len(ALLOWED_CHANNELS)):
            raise ValueError(f"channel_ok must have shape ({len(obs)}, {len(ALLOWED_CHANNELS)}), got {ok.shape}")
        # A channel is usable only with consent: the observation's flag says what the policy sees.
        ok = ok & (obs[:, _CONSENT_COLS] >= 0.5)
    return obs, ok


@dataclass
class StepResult:
    """What happened to each user in one night (arrays of shape (n,))."""

    reward: np.ndarray
    expected_reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    sent: np.ndarray
    opened: np.ndarray
    clicked: np.ndarray
    converted: np.ndarray
    unsubscribed: np.ndarray


class OfferDynamics:
    """The simulation of n users at once: the one implementation behind both environments.

    Randomness: each user slot has its own generator (`rngs[i]`), used only when the slot resets:
    it draws the starting row and every uniform number the episode will use, so a slot's episode
    depends on its generator alone, never on how many users are simulated next to it.

    `rules` (`ContactRules`) close nights as scoring does: the action mask is empty and nothing is
    sent. With `pass_blocked_nights` (the training environments), those nights pass within the step
    and the reset, so each step is a decision; the horizon's valuation steps every night instead.
    """

    def __init__(
        self,
        model: ResponseModel,
        start_obs: np.ndarray,
        channel_ok: np.ndarray | None,
        *,
        n: int,
        horizon: int,
        reward_mode: str,
        rules: ContactRules | None = None,
        pass_blocked_nights: bool = False,
    ) -> None:
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {list(REWARD_MODES)}, got {reward_mode!r}")
        if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
            raise ValueError(f"horizon must be a whole number of nights >= 1, got {horizon!r}")
        if n < 1:
            raise ValueError(f"the number of users simulated at once must be >= 1, got {n}")
        self.model = model
        self.start_obs, self.start_channel_ok = _check_starts(model, start_obs, channel_ok)
        self.n = n
        self.horizon = int(horizon)
        self.reward_mode = reward_mode
        self.rngs: list[np.random.Generator | None] = [None] * n
        self.obs = np.zeros((n, N_FEATURES))
        self.channel_ok = np.zeros((n, len(ALLOWED_CHANNELS)), dtype=bool)
        self.night = np.zeros(n, dtype=np.int64)
        self.start_index = np.zeros(n, dtype=np.int64)
        self._draws = np.zeros((n, self.horizon, _DRAWS))
        self.rules = rules or ContactRules()
        # the channel of each night's send (-1: none), slot night % window: the last 7 nights, or
        # the cap's window when it is longer
        self._window = max(WINDOW_NIGHTS, self.rules.cap_window)
        self._sends = np.full((n, self._window), -1, dtype=np.int8)
        self.pass_blocked_nights = bool(pass_blocked_nights) and self.rules.can_block
        self._initial_offers = np.zeros(n)
        self._ready = np.zeros(n, dtype=bool)
        self._rows = np.arange(n)
        self._action_channel = model.action_channel
        self._percent = model.action_percent_off

    # --- reset -------------------------------------------------------------------------------

    def reset(
        self, idx: np.ndarray, start_index: Sequence[int | None] | None = None, draws: np.ndarray | None = None
    ) -> None:
        """Start new episodes in slots `idx`, drawing from each slot's generator, or taking the
        uniform numbers `draws` (len(idx), 1 + horizon x 4) given: evaluation replays the same
        numbers under several policies (common random numbers) without a generator per slot."""
        idx = np.asarray(idx, dtype=np.int64)
        m = len(self.start_obs)
        size = 1 + self.horizon * _DRAWS
        if draws is not None:
            draws = np.asarray(draws, dtype=np.float64)
            if draws.shape != (len(idx), size):
                raise ValueError(f"draws must have shape ({len(idx)}, {size}), got {draws.shape}")
        else:
            draws = np.empty((len(idx), size))
            for j, i in enumerate(idx):
                rng = self.rngs[i]
                if rng is None:
                    raise RuntimeError(f"user slot {i} has no random generator; seed it before resetting")
                rng.random(out=draws[j])
        starts = np.minimum((draws[:, 0] * m).astype(np.int64), m - 1)
        if start_index is not None:
            for j, s in enumerate(start_index):
                if s is not None:
                    if not 0 <= int(s) < m:
                        raise ValueError(f"start_index must be in [0, {m}), got {s}")
                    starts[j] = int(s)
        self.start_index[idx] = starts
        self._draws[idx] = draws[:, 1:].reshape(len(idx), self.horizon, _DRAWS)
        self.obs[idx] = self.start_obs[starts]
        self.channel_ok[idx] = self.start_channel_ok[starts]
        self.night[idx] = 0
        self._sends[idx] = -1
        self._initial_offers[idx] = np.rint(self.obs[idx, _COL["offers_last_7d"]] * FEATURES[_COL["offers_last_7d"]][2])
        self._ready[idx] = True
        if self.pass_blocked_nights:  # the episode's first decision is its first open night (or its last night)
            live = np.zeros(self.n, dtype=bool)
            live[idx] = self.channel_ok[idx].any(axis=1)
            self._pass_blocked(live, until=self.horizon - 1)

    # --- step --------------------------------------------------------------------------------

    def action_mask(self) -> np.ndarray:
        """bool (n, n_actions): the actions whose channel each user can receive now and the
        contact rules allow; the rest wherever some offer is (a user the rules block tonight gets
        no action at all: skipped, as scoring skips them)."""
        return self.model.catalog.action_mask(self.usable_channels())

    def usable_channels(self) -> np.ndarray:
        """bool (n, 3): the channels each user can be sent on tonight (consent, the contact rules)."""
        if not self.rules.can_block:
            return self.channel_ok
        return self.channel_ok & ~self._blocked()

    def _blocked(self) -> np.ndarray:
        """bool (n, 3): the channels the contact rules close tonight."""
        rules, n = self.rules, self.n
        blocked = np.zeros((n, len(ALLOWED_CHANNELS)), dtype=bool)
        if rules.cap_total is not None:
            blocked |= (self._window_sends(rules.cap_window) >= rules.cap_total)[:, None]
        for j, cap in enumerate(rules.cap_per_channel):
            if cap is not None:
                blocked[:, j] |= self._window_sends(rules.cap_window, channel=j) >= cap
        if rules.cooldown_nights > 0:
            days = self.obs[:, _COL["days_since_last_purchase"]] * FEATURES[_COL["days_since_last_purchase"]][2]
            blocked |= (days <= rules.cooldown_nights + 1e-6)[:, None]
        return blocked

    def _window_sends(self, nights: int, channel: int | None = None) -> np.ndarray:
        """int (n,): offers of the last `nights` nights (those before the episode too, spread evenly
        over its 7 nights before, for the total only)."""
        back = (self.night[:, None] - 1 - np.arange(min(nights, self._window))) % self._window
        past = np.take_along_axis(self._sends, back, axis=1)
        inside = np.arange(back.shape[1])[None, :] < self.night[:, None]  # nights of this episode
        count = ((past == channel) if channel is not None else (past >= 0)) & inside
        total = count.sum(axis=1)
        if channel is None:
            left = np.maximum(np.minimum(nights, WINDOW_NIGHTS) - self.night, 0) / WINDOW_NIGHTS
            total = total + np.rint(self._initial_offers * left).astype(np.int64)
        return total

    def step(self, actions: np.ndarray) -> StepResult:
        """One night for every slot: send, sample the outcomes, reward, move the state."""
        if not self._ready.all():
            raise RuntimeError("reset the environment before stepping it")
        a = np.asarray(actions)
        if a.shape != (self.n,) or a.dtype.kind not in "iu":
            raise ValueError(f"actions must be {self.n} integer action ids, got shape {a.shape} dtype {a.dtype}")
        if a.min() < 0 or a.max() >= self.model.n_actions:
            raise ValueError(f"action ids must be in [0, {self.model.n_actions}), got {a.min()}..{a.max()}")
        rows = self._rows
        channel = self._action_channel[a]
        # the rest (channel -1) sends nothing: no reward, no contact, no fatigue, no unsubscribe;
        # nor does an offer on a channel the user cannot receive or the contact rules close tonight
        sent = self.usable_channels()[rows, channel] & (channel >= 0)
        o = self.model.evaluate_unchecked(self.obs, a)
        u = self._draws[rows, np.minimum(self.night, self.horizon - 1)]
        opened = sent & (u[:, 0] < o.open)
        clicked = opened & (u[:, 1] < o.click)
        converted = clicked & (u[:, 2] < o.convert)
        unsubscribed = opened & (u[:, 3] < o.unsubscribe)
        expected = np.where(sent, o.value_if_sent, 0.0)
        if self.reward_mode == "expected":
            reward = expected
        else:
            realised = (
                converted * o.net_conversion - o.contact_cost - self.model.rules.unsubscribe_penalty * unsubscribed
            )
            reward = np.where(sent, realised, 0.0)
        self._advance(a, channel, sent, clicked, converted, unsubscribed, o.order_value)
        terminated = ~self.channel_ok.any(axis=1)
        truncated = (self.night >= self.horizon) & ~terminated
        if self.pass_blocked_nights:
            truncated |= self._pass_blocked(~(terminated | truncated), until=self.horizon)
        done = terminated | truncated
        self._ready[done] = False
        return StepResult(reward, expected, terminated, truncated, sent, opened, clicked, converted, unsubscribed)

    def _pass_blocked(self, live: np.ndarray, *, until: int) -> np.ndarray:
        """The nights the contact rules close for the `live` slots pass without contact (no
        decision, nothing to learn from) until a night is open or the slot reaches night `until`.
        Returns bool (n,): the live slots whose horizon ended so."""
        while True:
            rows = np.flatnonzero(live & (self.night < until) & ~self.usable_channels().any(axis=1))
            if not len(rows):
                return live & (self.night >= self.horizon)
            self._sends[rows, self.night[rows] % self._window] = -1
            self.night[rows] += 1
            self.obs[rows, _COL["offers_last_7d"]] = np.minimum(
                self._window_sends(WINDOW_NIGHTS)[rows] / WINDOW_NIGHTS, 1.0
            )
            self._clocks_tick(rows)

    def _clocks_tick(self, rows: np.ndarray | slice) -> None:
        """A night passes on the days-since features of `rows`."""
        for name in ("recency_days", "days_since_last_purchase", "days_since_last_offer"):
            j = _COL[name]
            self.obs[rows, j] = np.minimum(self.obs[rows, j] + 1.0 / FEATURES[j][2], 1.0)

    def _advance(
        self,
        a: np.ndarray,
        channel: np.ndarray,
        sent: np.ndarray,
        clicked: np.ndarray,
        converted: np.ndarray,
        unsubscribed: np.ndarray,
        order_value: np.ndarray,
    ) -> None:
        """The state after the night: contact history, the purchase it caused, revoked consent.

        Preference and responsiveness features stay as they are: they estimate traits of the user
        that one more offer does not change.
        """
        obs, rows = self.obs, self._rows
        # Contact history: this night's send enters the window; the offers of the 7 nights before
        # the episode, spread evenly, leave it one by one.
        self._sends[rows, self.night % self._window] = np.where(sent, channel, -1)
        self.night += 1
        obs[:, _COL["offers_last_7d"]] = np.minimum(self._window_sends(WINDOW_NIGHTS) / WINDOW_NIGHTS, 1.0)

        # A click is a session (an event), a conversion a purchase: those clocks restart.
        obs[clicked, _COL["recency_days"]] = 0.0
        obs[converted, _COL["days_since_last_purchase"]] = 0.0
        obs[sent, _COL["days_since_last_offer"]] = 0.0
        self._clocks_tick(slice(None))

        c = np.flatnonzero(clicked)
        if len(c):
            _add_raw(obs, c, "frequency_sessions", 1.0)
            points = _CLICK_POINTS + _PURCHASE_POINTS * converted[c]
            e = np.minimum(obs[c, _COL["engagement_score"]], 1.0 - 1e-9)
            total = -_ENGAGEMENT_SCALE * np.log1p(-e) + points
            obs[c, _COL["engagement_score"]] = -np.expm1(-total / _ENGAGEMENT_SCALE)
        v = np.flatnonzero(converted)
        if len(v):
            _add_raw(obs, v, "purchase_count", 1.0)
            _add_raw(obs, v, "monetary_value", order_value[v] * (1.0 - self._percent[a[v]]))

        # An unsubscribe revokes the channel for the rest of the episode.
        q = np.flatnonzero(unsubscribed)
        if len(q):
            self.channel_ok[q, channel[q]] = False
            obs[q, _CONSENT_COLS[channel[q]]] = 0.0

    def observations(self) -> np.ndarray:
        """A new float32 array of the current observations (n, N_FEATURES)."""
        return self.obs.astype(np.float32)

    def rollout(self, act: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Every slot (reset first) for the whole horizon, choosing with `act(obs float32, mask)`
        (action ids; -1 where nothing is allowed). Returns (reward, chosen): float (n, horizon) the
        night's reward and int (n, horizon) the action chosen (-1: none allowed). A slot whose
        episode terminated (no channel left) stays in the loop: it can receive nothing, so it earns
        0 every night after, which is what a fixed-length valuation over the horizon counts."""
        reward = np.zeros((self.n, self.horizon))
        chosen = np.full((self.n, self.horizon), -1, dtype=np.int64)
        for night in range(self.horizon):
            self._ready[:] = True
            actions = np.asarray(act(self.observations(), self.action_mask()), dtype=np.int64)
            chosen[:, night] = actions
            reward[:, night] = self.step(np.maximum(actions, 0)).reward * (actions >= 0)
        return reward, chosen


def _add_raw(obs: np.ndarray, rows: np.ndarray, name: str, amount: np.ndarray | float) -> None:
    """Add `amount` in the feature's own units to normalised observations (capped at 1 like normalise)."""
    j = _COL[name]
    _, transform, scale = FEATURES[j]
    col = obs[rows, j]
    if transform == "log1p":
        k = np.log1p(scale)
        obs[rows, j] = np.minimum(np.log1p(np.expm1(col * k) + amount) / k, 1.0)
    else:
        obs[rows, j] = np.minimum(col + np.asarray(amount) / scale, 1.0)


class OfferEnv(gym.Env):
    """One user receives at most one offer per night, for `horizon` nights.

    ## Action Space
    `Discrete(catalog.n_actions)`: the action id of the offer to send (offer type, value, channel,
    timing, in the catalog's order). An action on a channel the user cannot receive (no consent or
    no address, or unsubscribed during the episode) or that the contact rules close tonight
    (`ContactRules`: frequency caps, the cooldown after a purchase) sends nothing; `action_masks()`
    says which can be sent (the interface of sb3-contrib's MaskablePPO).

    ## Observation Space
    `Box(0, 1, (N_FEATURES,), float32)` (39 today): the user's normalised features
    (`recsys.model.observation.FEATURES`).
    The dynamics move the contact history (offers_last_7d, days_since_last_offer), the recency
    features and, after a conversion, purchase_count, monetary_value, frequency_sessions and
    engagement_score; an unsubscribe sets that channel's consent flag to 0.

    ## Rewards
    `reward_mode="expected"` (default): the expected net value of the chosen offer in the current
    state under the response model: P(convert) (margin on the order - offer cost) - contact cost -
    unsubscribe penalty P(unsubscribe); 0 when nothing is sent. Its mean equals the realised value's
    with less variance, which is what a model-based environment should hand a learner; the outcomes
    (open, click, conversion, unsubscribe) are still sampled, because fatigue, purchases and
    unsubscribes change the next nights. `reward_mode="sampled"`: the realised net value.

    ## Starting State
    A row of `start_obs` (real users, from `load_states`) drawn uniformly with `self.np_random`,
    or `options={"start_index": i}`. Offers in the 7 nights before the start are taken as spread
    evenly over those nights.

    ## Contact rules
    With `rules` (`ContactRules`: the campaign's frequency caps and the cooldown after a purchase),
    a night the rules close for the user passes without a decision, as scoring skips the user: the
    next step is the user's next open night (`info["night"]`), so every step is a choice that
    changes something. The reward of a step is its night's; the nights passed earn nothing.

    ## Episode End
    Truncated after `horizon` nights (default 7). Terminated when the user can receive no channel
    any more (all unsubscribed, or none to begin with): nothing that follows can earn anything.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention

    def __init__(
        self,
        model: ResponseModel,
        start_obs: np.ndarray,
        channel_ok: np.ndarray | None = None,
        *,
        horizon: int = 7,
        reward_mode: str = "expected",
        rules: ContactRules | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"OfferEnv has no render modes, got {render_mode!r}")
        self.render_mode = render_mode
        self._core = OfferDynamics(
            model,
            start_obs,
            channel_ok,
            n=1,
            horizon=horizon,
            reward_mode=reward_mode,
            rules=rules,
            pass_blocked_nights=True,
        )
        self.observation_space = _observation_space()
        self.action_space = spaces.Discrete(model.n_actions)
        self.model = model
        self.horizon = self._core.horizon

    @classmethod
    def from_states(cls, model: ResponseModel, states: States, **kwargs: Any) -> OfferEnv:
        """An environment starting from the users of `states` (`recsys.data.states.load_states`)."""
        return cls(model, states.obs, states.channel_ok, **kwargs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._core.rngs[0] = self.np_random
        start = (options or {}).get("start_index")
        self._core.reset(np.zeros(1, dtype=np.int64), None if start is None else [start])
        return self._get_obs(), self._get_info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        result = self._core.step(np.array([int(action)], dtype=np.int64))
        return (
            self._get_obs(),
            float(result.reward[0]),
            bool(result.terminated[0]),
            bool(result.truncated[0]),
            self._get_info(result),
        )

    def action_masks(self) -> np.ndarray:
        """bool (n_actions,): the actions whose channel the user can receive now."""
        return self._core.action_mask()[0]

    def _get_obs(self) -> np.ndarray:
        return self._core.observations()[0]

    def _get_info(self, result: StepResult | None = None) -> dict[str, Any]:
        info: dict[str, Any] = {"start_index": int(self._core.start_index[0]), "night": int(self._core.night[0])}
        if result is not None:
            info |= {
                "sent": bool(result.sent[0]),
                "opened": bool(result.opened[0]),
                "clicked": bool(result.clicked[0]),
                "converted": bool(result.converted[0]),
                "unsubscribed": bool(result.unsubscribed[0]),
                "expected_reward": float(result.expected_reward[0]),
            }
        return info


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="recsys.model.env:OfferEnv")
