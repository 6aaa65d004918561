"""The gate judges rests over the horizon (issue 13): one night judges only the choice among offers
(every policy conditioned on offering), the simulator over the horizon judges the rests, and the
stored evaluation says which judged what."""

from __future__ import annotations

import datetime as dt
from dataclasses import astuple

import numpy as np
import pytest

from recsys.config.catalog import ALLOWED_CHANNELS, load_catalog
from recsys.config.reward import load_reward_rules
from recsys.db import Connection
from recsys.evaluation.challenger import evaluate_challenger
from recsys.evaluation.gate import ONE_NIGHT_SCOPE, GateConfig, decide
from recsys.evaluation.horizon import horizon_values
from recsys.evaluation.results import (
    ChallengerEvaluation,
    ChampionEvaluation,
    HorizonEvaluation,
    HorizonValue,
)
from recsys.model.baselines import FixedActionPolicy, OffersOnly, ResponseGreedyPolicy, UniformRandomPolicy
from recsys.model.contact_rules import ContactRules
from recsys.model.env import OfferDynamics
from recsys.model.observation import FEATURE_NAMES, N_FEATURES, States
from recsys.model.response import prior_response_model

CATALOG = load_catalog()
DAY = dt.date(2025, 6, 10)


def _states(n: int = 400, seed: int = 7) -> States:
    rng = np.random.default_rng(seed)
    obs = rng.random((n, N_FEATURES)).astype(np.float32)
    for name in ("email_consent", "sms_consent", "push_consent"):
        obs[:, FEATURE_NAMES.index(name)] = 1.0
    obs[:, FEATURE_NAMES.index("offers_last_7d")] = 0.0
    return States(
        as_of=DAY,
        user_ids=np.arange(n, dtype=np.int64),
        raw=obs.astype(np.float64),
        obs=obs,
        channel_ok=np.ones((n, len(ALLOWED_CHANNELS)), dtype=bool),
        top_category=np.full(n, "books", dtype=object),
    )


@pytest.fixture(scope="module")
def response():
    return prior_response_model(CATALOG, load_reward_rules())


def test_offers_only_never_rests_and_takes_the_policys_best_offer(response) -> None:
    states = _states(50)
    mask = states.action_mask(CATALOG)
    greedy = ResponseGreedyPolicy(CATALOG, response)
    rewards = np.where(mask, response.reward_matrix(states.obs), -np.inf)
    rewards[:, CATALOG.rest_id] = np.inf  # a policy that would rest everyone, if allowed
    resting = FixedActionPolicy(CATALOG, CATALOG.rest_id)
    assert (resting.probabilities(states.obs, mask)[:, CATALOG.rest_id] == 1.0).all()
    conditioned = OffersOnly(resting, CATALOG).probabilities(states.obs, mask)
    assert (conditioned[:, CATALOG.rest_id] == 0.0).all() and np.allclose(conditioned.sum(axis=1), 1.0)
    # the response-greedy policy's best offer, wrapped or not, when the rest is worth less
    best = OffersOnly(greedy, CATALOG).act(states.obs, mask)[0]
    assert (best < CATALOG.n_offers).all()
    offers = np.where(mask, response.reward_matrix(states.obs), -np.inf)[:, : CATALOG.n_offers]
    assert np.array_equal(best, offers.argmax(axis=1))
    # without the rest in the catalog, the wrapper changes nothing
    plain = CATALOG.without_rest()
    u = UniformRandomPolicy(plain)
    plain_mask = plain.action_mask(states.channel_ok)
    assert np.array_equal(
        OffersOnly(u, plain).probabilities(states.obs, plain_mask), u.probabilities(states.obs, plain_mask)
    )


def test_the_horizon_values_are_paired_on_the_same_users_and_draws(response) -> None:
    states = _states()
    greedy = ResponseGreedyPolicy(CATALOG, response)
    rest = FixedActionPolicy(CATALOG, CATALOG.rest_id)
    result = horizon_values(
        {
            "greedy": greedy,
            "again": ResponseGreedyPolicy(CATALOG, response),
            "rest": rest,
            "offering": OffersOnly(greedy, CATALOG),
        },
        {"same": ("greedy", "again"), "rest_vs_greedy": ("rest", "greedy")},
        states=states,
        response=response,
        catalog=CATALOG,
        nights=5,
        max_users=300,
        seed=1,
    )
    assert result.users == 300 and result.nights == 5
    # the same policy twice: the same draws, exactly the same value, an interval of width 0
    same = result.differences["same"]
    assert same.value == 0.0 and same.lower == 0.0 and same.upper == 0.0
    # resting every night is worth exactly 0 and rests every user-night
    assert result.values["rest"] == HorizonValue(0.0, 0.0, 0.0)
    assert result.rest_share["rest"] == 1.0 and result.rest_share["offering"] == 0.0
    # greedy on the model rests where every offer is worth less than nothing: it can only gain by it
    assert 0.0 < result.rest_share["greedy"] < 1.0
    assert result.values["greedy"].value > result.values["offering"].value
    greedy_value = result.values["greedy"]
    assert greedy_value.value > 0 and greedy_value.lower <= greedy_value.value <= greedy_value.upper
    assert result.differences["rest_vs_greedy"].value == pytest.approx(-greedy_value.value)
    # a seed decides the sample and draws: the same seed, the same numbers (to rounding: the interval
    # is summed in another order when fewer policies are followed)
    again = horizon_values(
        {"greedy": greedy}, {}, states=states, response=response, catalog=CATALOG, nights=5, max_users=300, seed=1
    )
    assert astuple(again.values["greedy"]) == pytest.approx(astuple(greedy_value), rel=1e-12, abs=1e-15)
    other = horizon_values(
        {"greedy": greedy}, {}, states=states, response=response, catalog=CATALOG, nights=5, max_users=300, seed=2
    )
    assert other.values["greedy"].value != pytest.approx(greedy_value.value, rel=1e-9)


def test_the_horizon_applies_the_campaigns_contact_rules(response) -> None:
    """An offer every night is what the cap of 3 a week cuts: its value over the horizon drops, and
    the capped nights count as skipped, not as rests."""
    states = _states()
    offer = FixedActionPolicy(CATALOG, 0)
    kwargs = {"states": states, "response": response, "catalog": CATALOG, "nights": 7, "max_users": 300, "seed": 3}
    free = horizon_values({"offer": offer}, {}, **kwargs)
    capped = horizon_values({"offer": offer}, {}, rules=ContactRules(cap_total=3), **kwargs)
    assert free.rest_share["offer"] == capped.rest_share["offer"] == 0.0
    per_night = response.reward_matrix(states.obs)[:, 0]
    assert (per_night > 0).mean() > 0.5  # the offer earns, so fewer sends earn less
    assert capped.values["offer"].value < free.values["offer"].value
    # the same rollout in the simulator the horizon runs: 3 nights offered, then 4 skipped (-1)
    core = OfferDynamics(
        response,
        states.obs,
        states.channel_ok,
        n=len(states),
        horizon=7,
        reward_mode="expected",
        rules=ContactRules(cap_total=3),
    )
    core.reset(np.arange(len(states)), list(range(len(states))), draws=np.full((len(states), 29), 0.999))
    reward, chosen = core.rollout(lambda obs, mask: np.where(mask.any(axis=1), 0, -1))
    assert (chosen[:, :3] == 0).all() and (chosen[:, 3:] == -1).all() and (reward[:, 3:] == 0).all()


def _horizon(rests: HorizonValue, vs_champion: HorizonValue | None, share: float = 0.3) -> HorizonEvaluation:
    values = {"challenger": HorizonValue(0.05, 0.04, 0.06), "challenger_offering": HorizonValue(0.05, 0.04, 0.06)}
    differences = {"rests": rests}
    if vs_champion is not None:
        values["champion"] = HorizonValue(0.05, 0.04, 0.06)
        differences["vs_champion"] = vs_champion
    return HorizonEvaluation(7, 1_000, values, differences, {"challenger": share, "champion": 0.0})


def _challenger(horizon: HorizonEvaluation | None) -> ChallengerEvaluation:
    return ChallengerEvaluation(simulator_value=0.05, random_value=0.01, horizon=horizon)


CHAMPION = ChampionEvaluation(simulator_value=0.05)


def test_rests_that_lose_over_the_horizon_reject_a_challenger_that_wins_the_one_night_checks() -> None:
    losing = _challenger(_horizon(HorizonValue(-0.01, -0.012, -0.008), HorizonValue(0.0, -0.001, 0.001)))
    d = decide(losing, CHAMPION, GateConfig())
    assert d.decision == "rejected"
    failed = [r for r in d.reasons if not r.passed]
    assert len(failed) == 1 and "rests pay over the horizon" in failed[0].check
    assert "30.0% of user-nights" in failed[0].detail
    # every one-night check says it judged the choice among offers only
    horizon = [r for r in d.reasons if "7 nights" in r.check]
    one_night = [r for r in d.reasons if r not in horizon]
    assert len(horizon) == 2 and not any(ONE_NIGHT_SCOPE in r.check for r in horizon)
    assert len(one_night) >= 2 and all(r.check.endswith(ONE_NIGHT_SCOPE) for r in one_night)
    # the same challenger with rests that pay is promoted
    paying = _challenger(_horizon(HorizonValue(0.002, 0.001, 0.003), HorizonValue(0.002, 0.001, 0.003)))
    assert decide(paying, CHAMPION, GateConfig()).decision == "promoted"
    # and as a first champion too: check 6 judges without a champion
    assert decide(losing, None, GateConfig()).decision == "rejected"
    assert decide(paying, None, GateConfig()).decision == "bootstrap"


def test_the_value_over_the_horizon_must_not_be_worse_than_the_champions() -> None:
    worse = _challenger(_horizon(HorizonValue(0.0, -0.001, 0.001), HorizonValue(-0.002, -0.003, -0.001)))
    d = decide(worse, CHAMPION, GateConfig(margin=0.02))  # tolerance 0.02 x 0.05 = 0.001
    assert d.decision == "rejected"
    (failed,) = [r for r in d.reasons if not r.passed]
    assert "not worse than the champion's (simulator, 7 nights, rests included)" in failed.check
    assert d.decision == "rejected" and decide(worse, CHAMPION, GateConfig(margin=0.05)).decision == "promoted"


def test_a_challenger_that_never_rests_has_nothing_judged_over_the_horizon_and_old_evaluations_keep_their_checks() -> (
    None
):
    never = _challenger(_horizon(HorizonValue(0.0, 0.0, 0.0), None, share=0.0))
    d = decide(never, CHAMPION, GateConfig())
    rests = next(r for r in d.reasons if "rests pay" in r.check)
    assert rests.inconclusive and "nothing to judge" in rests.detail
    assert d.decision == "promoted"
    # an evaluation without the horizon (a catalog without the rest): the checks as before
    plain = decide(_challenger(None), CHAMPION, GateConfig())
    assert not any(ONE_NIGHT_SCOPE in r.check or "horizon" in r.check for r in plain.reasons)


def test_the_stored_evaluation_says_which_part_judged_what_and_round_trips() -> None:
    evaluation = _challenger(_horizon(HorizonValue(0.002, 0.001, 0.003), HorizonValue(0.002, 0.001, 0.003)))
    stored = evaluation.to_json()
    assert stored["judged"]["one_night"].startswith("the choice among offers")
    assert stored["judged"]["horizon"].startswith("the rests")
    assert stored["horizon"]["differences"]["rests"] == {"value": 0.002, "lower": 0.001, "upper": 0.003}
    assert stored["horizon"]["rest_share"]["challenger"] == 0.3
    assert ChallengerEvaluation.from_json(stored) == evaluation
    assert "judged" not in _challenger(None).to_json()


def test_a_challenger_resting_everyone_is_judged_on_its_best_offers_for_one_night_and_rejected_over_the_horizon(
    db: Connection, response
) -> None:
    states = _states()
    resting = FixedActionPolicy(CATALOG, CATALOG.rest_id)
    evaluation = evaluate_challenger(
        db,
        resting,
        as_of=DAY,
        states=states,
        response=response,
        catalog=CATALOG,
        current=None,
        seed=0,
        horizon=(3, 200),
    )
    # one night: its best offer where it rests (uniform over the offers: the first allowed offer)
    mask = states.action_mask(CATALOG)
    first = np.where(mask[:, : CATALOG.n_offers], 1, 0).argmax(axis=1)
    assert evaluation.simulator_value == pytest.approx(float(response.expected_reward(states.obs, first).mean()))
    assert evaluation.simulator_value != 0.0
    # over the horizon: it rests every user-night, worth exactly 0
    h = evaluation.horizon
    assert h is not None and h.nights == 3 and h.users == 200
    assert h.rest_share["challenger"] == 1.0 and h.rest_share["challenger_offering"] == 0.0
    assert h.values["challenger"].value == 0.0
    assert h.differences["rests"].value == pytest.approx(-h.values["challenger_offering"].value)
    assert h.values["challenger_offering"].value > 0 and h.differences["rests"].upper < 0
    # uniform random over the horizon is drawn, not greedy: it rests about once in n_actions
    assert 0.0 < h.rest_share["random"] < 0.05
    assert h.values["random"].value != h.values["challenger_offering"].value
    d = decide(evaluation, None, GateConfig(require_evidence_over_baseline=False))
    rests = next(r for r in d.reasons if "rests pay over the horizon" in r.check)
    assert d.decision == "rejected" and not rests.passed and "rests on 100.0% of user-nights" in rests.detail
    # without the rest in the catalog there is nothing to judge over the horizon
    plain = evaluate_challenger(
        db,
        UniformRandomPolicy(CATALOG.without_rest()),
        as_of=DAY,
        states=states,
        response=prior_response_model(CATALOG.without_rest(), load_reward_rules()),
        catalog=CATALOG.without_rest(),
        current=None,
        seed=0,
    )
    assert plain.horizon is None


def test_the_leaderboard_shows_the_value_over_the_horizon_and_the_rested_share(db: Connection) -> None:
    from recsys.benchmark.toy import toy_record
    from recsys.db import fetch_all
    from recsys.evaluation.registry import register

    with_rests = _challenger(_horizon(HorizonValue(0.002, 0.001, 0.003), HorizonValue(0.002, 0.001, 0.003)))
    register(
        db,
        toy_record(
            CATALOG, "m-rests", b"x", seed=1, trained_on=DAY, total_timesteps=64, evaluation=with_rests.to_json()
        ),
    )
    register(
        db,
        toy_record(
            CATALOG, "m-plain", b"y", seed=1, trained_on=DAY, total_timesteps=64, evaluation=_challenger(None).to_json()
        ),
    )
    rows = {
        r["model_version"]: r
        for r in fetch_all(
            db, "select model_version, horizon_value, horizon_rest_share from recsys.v_model_leaderboard"
        )
    }
    db.rollback()
    assert rows["m-rests"]["horizon_value"] == 0.05 and rows["m-rests"]["horizon_rest_share"] == 0.3
    assert rows["m-plain"]["horizon_value"] is None and rows["m-plain"]["horizon_rest_share"] is None
