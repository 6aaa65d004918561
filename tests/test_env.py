"""Tests of `recsys.model.env`: the Gymnasium environment, its vectorised twin and their dynamics.

No database: starting states are arrays, as the environment takes them. The dynamics are checked
with configs whose priors make an event (open, conversion, unsubscribe) all but certain.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv

from recsys.benchmark.toy import plausible_observations
from recsys.config.catalog import DEFAULT_CONFIG, Catalog, load_catalog
from recsys.config.reward import load_reward_rules
from recsys.config.rules import CampaignRules
from recsys.model.contact_rules import ContactRules
from recsys.model.env import ENV_ID, OfferDynamics, OfferEnv
from recsys.model.observation import FEATURE_NAMES, N_FEATURES
from recsys.model.response import ResponseModel, prior_response_model
from recsys.model.vec_env import OfferVecEnv

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="module")
def model(catalog: Catalog) -> ResponseModel:
    return prior_response_model(catalog, load_reward_rules())


def _starts(n: int = 300, seed: int = 0, **fixed: float) -> np.ndarray:
    """Plausible normalised users; `fixed` sets raw feature values for all of them."""
    return plausible_observations(n, seed, **fixed)


def _action(catalog: Catalog, offer_type: str, value: float, channel: str) -> int:
    return next(
        a.action_id
        for a in catalog.actions
        if (a.offer_type, a.value, a.channel, a.timing) == (offer_type, value, channel, "immediate")
    )


def _model_with(catalog: Catalog, tmp_path: Path, replacements: list[tuple[str, str]]) -> ResponseModel:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return prior_response_model(catalog, load_reward_rules(path))


CERTAIN_EMAIL_OPEN = [
    ("[reward.prior.open_rate]\nemail = 0.20", "[reward.prior.open_rate]\nemail = 0.9999"),
    ("fatigue_per_offer = 0.15", "fatigue_per_offer = 0.0"),
    ("responsiveness_weight = 3.0", "responsiveness_weight = 0.0"),
]
CERTAIN_EMAIL_CONVERSION = [
    *CERTAIN_EMAIL_OPEN,
    ("[reward.prior.click_rate]\nemail = 0.05", "[reward.prior.click_rate]\nemail = 0.9999"),
    ("convert_rate = 0.10", "convert_rate = 0.9999"),
]


def _rollout(env: OfferEnv, seed: int, actions: list[int]) -> list:
    obs, info = env.reset(seed=seed)
    out = [(obs, info)]
    for a in actions:
        step = env.step(a)
        out.append(step)
        if step[2] or step[3]:
            out.append(env.reset())
    return out


# --------------------------------------------------------------------------------------------
# API conformance


def test_stable_baselines3_check_env_without_warnings(model: ResponseModel) -> None:
    env = OfferEnv(model, _starts())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env, warn=True)


def test_gymnasium_check_env_with_determinism_checks(model: ResponseModel) -> None:
    env = gym.make(ENV_ID, model=model, start_obs=_starts())
    # With a spec (gymnasium.make), the checker also compares observations of seeded resets.
    assert env.unwrapped.spec is not None and env.unwrapped.spec.nondeterministic is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gymnasium_check_env(env.unwrapped)


def test_spaces(model: ResponseModel, catalog: Catalog) -> None:
    env = OfferEnv(model, _starts())
    assert env.action_space == gym.spaces.Discrete(catalog.n_actions)
    assert env.observation_space.shape == (N_FEATURES,) and env.observation_space.dtype == np.float32
    obs, _ = env.reset(seed=1)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)


def test_bad_arguments_are_refused(model: ResponseModel) -> None:
    with pytest.raises(ValueError, match=r"start_obs must be normalised"):
        OfferEnv(model, _starts() * 3)
    with pytest.raises(ValueError, match=r"start_obs must have shape"):
        OfferEnv(model, np.zeros((0, N_FEATURES)))
    with pytest.raises(ValueError, match=r"reward_mode"):
        OfferEnv(model, _starts(), reward_mode="guess")
    with pytest.raises(ValueError, match=r"horizon"):
        OfferEnv(model, _starts(), horizon=0)
    with pytest.raises(ValueError, match=r"channel_ok must have shape"):
        OfferEnv(model, _starts(), np.ones((3, 3), bool))
    env = OfferEnv(model, _starts())
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


# --------------------------------------------------------------------------------------------
# Seeding


def test_same_seed_same_trajectory(model: ResponseModel, catalog: Catalog) -> None:
    actions = list(np.random.default_rng(3).integers(0, catalog.n_actions, 40))
    first = _rollout(OfferEnv(model, _starts()), 7, actions)
    second = _rollout(OfferEnv(model, _starts()), 7, actions)
    other = _rollout(OfferEnv(model, _starts()), 8, actions)
    assert gym.utils.env_checker.data_equivalence(first, second, exact=True)
    assert not gym.utils.env_checker.data_equivalence(first, other, exact=True)


def test_vec_env_equals_dummy_vec_env_of_offer_envs(model: ResponseModel, catalog: Catalog) -> None:
    n, starts = 5, _starts(40)
    ours = OfferVecEnv(model, starts, num_envs=n, horizon=4)
    theirs = DummyVecEnv([lambda: OfferEnv(model, starts, horizon=4) for _ in range(n)])
    ours.seed(123)
    theirs.seed(123)
    assert np.array_equal(ours.reset(), theirs.reset())
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(14):  # several episodes each: auto-resets included
        actions = rng.integers(0, catalog.n_actions, n)
        o1, r1, d1, i1 = ours.step(actions)
        o2, r2, d2, i2 = theirs.step(actions)
        assert np.array_equal(o1, o2) and np.array_equal(r1, r2) and np.array_equal(d1, d2)
        assert o1.dtype == o2.dtype and r1.dtype == r2.dtype
        for a, b, done in zip(i1, i2, d1, strict=True):
            if done:
                ended += 1
                assert np.array_equal(a["terminal_observation"], b["terminal_observation"])
                assert a["TimeLimit.truncated"] == b["TimeLimit.truncated"]
    assert ended >= 2 * n


def test_vec_env_slots_do_not_depend_on_their_neighbours(model: ResponseModel, catalog: Catalog) -> None:
    starts = _starts(50)
    small, big = OfferVecEnv(model, starts, num_envs=2, seed=9), OfferVecEnv(model, starts, num_envs=64, seed=9)
    o_small, o_big = small.reset(), big.reset()
    assert np.array_equal(o_small, o_big[:2])
    rng = np.random.default_rng(1)
    for _ in range(20):
        actions = rng.integers(0, catalog.n_actions, 64)
        s, rs, ds, _ = small.step(actions[:2])
        b, rb, db, _ = big.step(actions)
        assert np.array_equal(s, b[:2]) and np.array_equal(rs, rb[:2]) and np.array_equal(ds, db[:2])


# --------------------------------------------------------------------------------------------
# Dynamics


def test_disallowed_channel_sends_nothing(model: ResponseModel, catalog: Catalog) -> None:
    starts = _starts(1, email_consent=1, sms_consent=0, push_consent=1, offers_last_7d=0, days_since_last_offer=30)
    ok = np.array([[True, False, False]])  # push consented but no push token
    env = OfferEnv(model, starts, ok)
    obs, _ = env.reset(seed=0)
    mask = env.action_masks()
    channels = np.array([a.channel for a in catalog.actions])
    assert mask[channels == "email"].all() and not mask[(channels != "email") & (channels != "none")].any()
    assert mask[catalog.rest_id]  # the rest, wherever some offer is allowed
    for a in (_action(catalog, "discount", 10, "sms"), _action(catalog, "discount", 10, "push")):
        before = obs
        obs, reward, *_, info = env.step(a)
        assert reward == 0.0 and info["sent"] is False and info["expected_reward"] == 0.0
        assert obs[COL["offers_last_7d"]] == before[COL["offers_last_7d"]] == 0
        assert obs[COL["days_since_last_offer"]] > before[COL["days_since_last_offer"]]
    obs, reward, *_, info = env.step(_action(catalog, "discount", 10, "email"))
    assert info["sent"] is True and reward != 0.0
    assert obs[COL["offers_last_7d"]] == pytest.approx(1 / 7)
    assert obs[COL["days_since_last_offer"]] == pytest.approx(1 / 365)


def test_fatigue_lowers_the_open_probability(model: ResponseModel, catalog: Catalog) -> None:
    email = _action(catalog, "discount", 10, "email")
    env = OfferEnv(model, _starts(1, email_consent=1, offers_last_7d=0), horizon=7)
    obs, _ = env.reset(seed=2)
    opens = [model.stage_probabilities(obs, np.array([email]))["open"][0]]
    for night in range(1, 6):
        obs, *_ = env.step(email)
        assert obs[COL["offers_last_7d"]] == pytest.approx(night / 7)
        opens.append(model.stage_probabilities(obs, np.array([email]))["open"][0])
    assert all(b < a for a, b in itertools.pairwise(opens))


def test_offers_before_the_episode_leave_the_window(model: ResponseModel, catalog: Catalog) -> None:
    env = OfferEnv(model, _starts(1, offers_last_7d=7, email_consent=0, sms_consent=0, push_consent=1), horizon=10)
    obs, _ = env.reset(seed=0)
    assert obs[COL["offers_last_7d"]] == 1.0
    nothing = _action(catalog, "discount", 10, "email")  # not allowed: nothing is sent
    counts = []
    for _ in range(8):
        obs, *_ = env.step(nothing)
        counts.append(round(float(obs[COL["offers_last_7d"]]) * 7))
    assert counts == [6, 5, 4, 3, 2, 1, 0, 0]


def _core(model: ResponseModel, start: np.ndarray, rules: ContactRules, horizon: int) -> OfferDynamics:
    """The dynamics the horizon's valuation steps night by night, one user, no event sampled."""
    core = OfferDynamics(model, start, None, n=1, horizon=horizon, reward_mode="expected", rules=rules)
    core.reset(np.zeros(1, dtype=np.int64), [0], draws=np.full((1, 1 + horizon * 4), 0.9999))
    return core


def _cap_rule_nights(before: int, cap: int, nights: int) -> list[bool]:
    """Night by night, whether a user offered on every open night may be sent to: fewer than `cap`
    offers in the last 7 nights, the `before` offers of the 7 nights before spread evenly."""
    open_: list[bool] = []
    for t in range(nights):
        open_.append(sum(open_[max(0, t - 7) : t]) + round(before * max(7 - t, 0) / 7) < cap)
    return open_


def test_the_frequency_cap_skips_a_capped_user_as_scoring_does(model: ResponseModel, catalog: Catalog) -> None:
    """At most 3 offers in any 7 nights, counting the 2 of the 7 nights before (spread evenly over
    them): a user at the cap gets no action at all (skipped, never rested), and an offer asked for
    anyway sends nothing."""
    email = _action(catalog, "discount", 10, "email")
    start = _starts(1, offers_last_7d=2, email_consent=1, sms_consent=0, push_consent=0)
    core = _core(model, start, ContactRules(cap_total=3), horizon=14)
    sent, allowed = [], []
    for _ in range(14):
        mask = core.action_mask()[0]
        allowed.append(bool(mask.any()))
        assert mask[catalog.rest_id] == mask.any()
        sent.append(bool(core.step(np.array([email])).sent[0]))  # an offer asked for every night
    expected = _cap_rule_nights(2, 3, 14)
    assert sent == allowed == expected
    assert expected[:9] == [True, False, True, False, False, False, True, False, True]

    free = _core(model, start, ContactRules(), horizon=14)
    assert all(free.step(np.array([email])).sent[0] for _ in range(14))  # without rules: every night


def test_the_training_environments_decide_only_on_open_nights(model: ResponseModel, catalog: Catalog) -> None:
    """The nights the rules close pass without a decision: PPO learns only from choices that
    change something, and the vectorised environment still equals the single one."""
    email = _action(catalog, "discount", 10, "email")
    start = _starts(1, offers_last_7d=2, email_consent=1, sms_consent=0, push_consent=0)
    env = OfferEnv(model, start, horizon=14, rules=ContactRules(cap_total=3))
    env.reset(seed=0)
    nights, done = [], False
    while not done:
        nights.append(env._core.night[0])
        *_, terminated, truncated, info = env.step(email)
        assert info["sent"] is True  # every decision is on a night it can be sent
        done = terminated or truncated
    expected = _cap_rule_nights(2, 3, 14)
    assert nights == [t for t in range(14) if expected[t]]

    starts = _starts(40, seed=5)
    rules = ContactRules(cap_total=2, cooldown_nights=2)
    vec = OfferVecEnv(model, starts, num_envs=4, horizon=7, rules=rules, seed=9)
    dummy = DummyVecEnv([lambda: OfferEnv(model, starts, horizon=7, rules=rules) for _ in range(4)])
    dummy.seed(9)
    a, b = vec.reset(), dummy.reset()
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(0)
    for _ in range(30):
        actions = rng.integers(0, catalog.n_actions, 4)
        oa, ra, da, _ = vec.step(actions)
        ob, rb, db, _ = dummy.step(actions)
        np.testing.assert_allclose(oa, ob, rtol=0, atol=1e-6)
        np.testing.assert_allclose(ra, rb, rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(da, db)


def test_the_cap_counts_the_offers_before_the_episode(model: ResponseModel, catalog: Catalog) -> None:
    email = _action(catalog, "discount", 10, "email")
    core = _core(model, _starts(1, offers_last_7d=3, email_consent=1), ContactRules(cap_total=3), horizon=7)
    assert not core.action_mask().any()  # 3 in the 7 nights before: nothing tonight
    result = core.step(np.array([email]))
    assert not result.sent[0] and result.expected_reward[0] == 0.0
    sends = [bool(core.step(np.array([email])).sent[0]) for _ in range(6)]
    assert sends == _cap_rule_nights(3, 3, 7)[1:]


def test_a_per_channel_cap_closes_that_channel_only(model: ResponseModel, catalog: Catalog) -> None:
    email, sms = _action(catalog, "discount", 10, "email"), _action(catalog, "discount", 10, "sms")
    rules = ContactRules(cap_per_channel=(1, None, None))  # one email a week
    env = OfferEnv(model, _starts(1, offers_last_7d=0, email_consent=1, sms_consent=1), horizon=7, rules=rules)
    env.reset(seed=0)
    assert env.step(email)[-1]["sent"] is True
    channels = np.array([a.channel for a in catalog.actions])
    mask = env.action_masks()
    assert not mask[channels == "email"].any() and mask[channels == "sms"].all()
    assert env.step(email)[-1]["sent"] is False
    assert env.step(sms)[-1]["sent"] is True


def test_the_cooldown_closes_the_nights_after_a_purchase(catalog: Catalog, tmp_path: Path) -> None:
    model = _model_with(catalog, tmp_path, CERTAIN_EMAIL_CONVERSION)
    offer = _action(catalog, "recommendation", 10, "email")
    start = _starts(1, days_since_last_purchase=200, email_consent=1, sms_consent=0, push_consent=0)
    env = OfferEnv(model, start, horizon=7, rules=ContactRules(cooldown_nights=2))
    env.reset(seed=0)
    nights = []
    for _ in range(3):
        nights.append(int(env._core.night[0]))
        *_, info = env.step(offer)
        assert info["sent"] and info["converted"]
    assert nights == [0, 3, 6]  # each conversion closes the next 2 nights
    # a purchase the day before the episode closes its first nights
    core = _core(model, _starts(1, days_since_last_purchase=1, email_consent=1), ContactRules(cooldown_nights=2), 3)
    assert [bool(core.step(np.array([offer])).sent[0]) for _ in range(3)] == [False, False, True]


def test_contact_rules_from_the_campaign_rules() -> None:
    rules = ContactRules.of(CampaignRules(cap_total=4, cap_window_days=10, cap_per_channel={"sms": 1}, cooldown_days=3))
    assert rules == ContactRules(cap_total=4, cap_window=10, cap_per_channel=(None, 1, None), cooldown_nights=3)
    assert rules.can_block and not ContactRules().can_block
    with pytest.raises(ValueError, match="cap_total"):
        ContactRules(cap_total=0)
    with pytest.raises(ValueError, match="cap_window"):
        ContactRules(cap_window=0)
    with pytest.raises(ValueError, match="one entry per channel"):
        ContactRules(cap_per_channel=(1,))


def test_unsubscribe_revokes_the_channel(catalog: Catalog, tmp_path: Path) -> None:
    model = _model_with(
        catalog,
        tmp_path,
        [
            *CERTAIN_EMAIL_OPEN,
            ("[reward.prior.unsubscribe_rate]\nemail = 0.005", "[reward.prior.unsubscribe_rate]\nemail = 0.9999"),
        ],
    )
    email = _action(catalog, "discount", 10, "email")
    env = OfferEnv(model, _starts(1, email_consent=1, sms_consent=1, push_consent=0), horizon=5)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(email)
    assert info["opened"] and info["unsubscribed"]
    assert obs[COL["email_consent"]] == 0.0 and obs[COL["sms_consent"]] == 1.0
    assert reward < -0.5 * model.rules.unsubscribe_penalty  # the penalty, nearly certain, dominates
    assert not terminated and not truncated  # sms is left
    channels = np.array([a.channel for a in catalog.actions])
    assert not env.action_masks()[channels == "email"].any() and env.action_masks()[channels == "sms"].all()
    obs, reward, *_, info = env.step(email)
    assert info["sent"] is False and reward == 0.0

    only_email = OfferEnv(model, _starts(1, email_consent=1, sms_consent=0, push_consent=0), horizon=5)
    only_email.reset(seed=0)
    *_, terminated, truncated, _ = only_email.step(email)
    assert terminated and not truncated  # nothing can be sent any more


def test_conversion_moves_purchase_features(catalog: Catalog, tmp_path: Path) -> None:
    model = _model_with(catalog, tmp_path, CERTAIN_EMAIL_CONVERSION)
    start = _starts(
        1, purchase_count=2, monetary_value=100, days_since_last_purchase=200, recency_days=100, email_consent=1
    )
    env = OfferEnv(model, start, horizon=3)
    before, _ = env.reset(seed=0)
    obs, reward, *_, info = env.step(_action(catalog, "recommendation", 10, "email"))
    assert info["converted"] and reward > 0
    assert obs[COL["purchase_count"]] > before[COL["purchase_count"]]
    assert obs[COL["monetary_value"]] > before[COL["monetary_value"]]
    assert obs[COL["frequency_sessions"]] > before[COL["frequency_sessions"]]
    assert obs[COL["engagement_score"]] > before[COL["engagement_score"]]
    assert obs[COL["days_since_last_purchase"]] == pytest.approx(1 / 365)
    assert obs[COL["recency_days"]] == pytest.approx(1 / 365)
    # Preferences are traits: a purchase does not move them.
    for name in ("discount_sensitivity", "email_responsiveness"):
        assert obs[COL[name]] == before[COL[name]]


def test_horizon_truncates(model: ResponseModel, catalog: Catalog) -> None:
    env = OfferEnv(model, _starts(), horizon=3)
    env.reset(seed=4)
    flags = [env.step(_action(catalog, "discount", 5, "email"))[2:4] for _ in range(3)]
    terminated = [t for t, _ in flags]
    assert [tr for _, tr in flags] == [False, False, not terminated[-1]]


def test_sampled_rewards_average_to_the_expected_ones(model: ResponseModel, catalog: Catalog) -> None:
    starts = _starts(2000, seed=5)
    n = 20_000
    actions = np.random.default_rng(2).integers(0, catalog.n_actions, n)
    sampled = OfferVecEnv(model, starts, num_envs=n, reward_mode="sampled", seed=1)
    expected = OfferVecEnv(model, starts, num_envs=n, reward_mode="expected", seed=1)
    sampled.reset(), expected.reset()
    _, r_sampled, _, _ = sampled.step(actions)
    _, r_expected, _, _ = expected.step(actions)
    assert np.array_equal(sampled.last_step.sent, expected.last_step.sent)
    se = r_sampled.std() / np.sqrt(n)
    assert abs(r_sampled.mean() - r_expected.mean()) < 4 * se
    assert r_sampled.std() > 3 * r_expected.std()


def test_ppo_learns_on_the_vec_env(model: ResponseModel) -> None:
    torch.set_num_threads(1)
    env = OfferVecEnv(model, _starts(), num_envs=32, seed=0)
    agent = PPO("MlpPolicy", env, n_steps=16, batch_size=128, n_epochs=1, seed=0, device="cpu")
    agent.learn(total_timesteps=1024)
    assert agent.num_timesteps >= 1024
    action, _ = agent.predict(env.reset(), deterministic=True)
    assert action.shape == (32,)
