"""The realised reward of a logged offer: what off-policy estimates average."""

from __future__ import annotations

import pandas as pd
import pytest

from recsys.config.reward import load_reward_rules
from recsys.evaluation.model_eval import realised_reward


def test_realised_reward_charges_margin_offer_cost_contact_and_recorded_unsubscribes() -> None:
    rules = load_reward_rules()
    rows = pd.DataFrame(
        {
            "offer_type": ["discount", "free_shipping", "recommendation", "bundle", "discount"],
            "offer_value": [10.0, 40.0, 5.0, 15.0, 5.0],
            "channel": ["email", "sms", "push", "email", "sms"],
            "converted": pd.array([True, True, True, False, False], dtype="boolean"),
            "revenue": [90.0, 50.0, 20.0, 0.0, 0.0],
            # an own offer with a recorded unsubscribe, and a past campaign's offer (unknown: null)
            "unsubscribed": pd.array([False, False, False, True, None], dtype="boolean"),
        }
    )
    got = realised_reward(rows, rules)
    m = rules.margin_rate
    expected = [
        100.0 * (m - 0.10) - rules.contact_cost["email"],  # list value 90 / 0.9 = 100
        50.0 * m - rules.offer_cost["free_shipping"].fee - rules.contact_cost["sms"],
        20.0 * m - rules.contact_cost["push"],
        -rules.contact_cost["email"] - rules.unsubscribe_penalty,
        -rules.contact_cost["sms"],
    ]
    assert got == pytest.approx(expected)
    # logs without the column (older views) charge no unsubscribes
    assert realised_reward(rows.drop(columns="unsubscribed"), rules)[3] == pytest.approx(-rules.contact_cost["email"])


def test_a_logged_rest_is_worth_exactly_zero() -> None:
    rules = load_reward_rules()
    rows = pd.DataFrame(
        {
            "offer_type": ["no_offer", "discount"],
            "offer_value": [0.0, 10.0],
            "channel": ["none", "email"],
            # whatever its row says, a rest sent nothing: no conversion, no contact, no unsubscribe
            "converted": pd.array([True, False], dtype="boolean"),
            "revenue": [50.0, 0.0],
            "unsubscribed": pd.array([True, False], dtype="boolean"),
        }
    )
    got = realised_reward(rows, rules)
    assert got[0] == 0.0 and got[1] == pytest.approx(-rules.contact_cost["email"])


def test_recsys_evaluate_values_a_policy_with_rests_over_the_horizon() -> None:
    from test_gate_rests import CATALOG, _states

    from recsys.config.learning import GateConfig
    from recsys.evaluation.model_eval import _horizon
    from recsys.model.baselines import FixedActionPolicy, ResponseGreedyPolicy
    from recsys.model.response import prior_response_model

    response = prior_response_model(CATALOG, load_reward_rules())
    gate = GateConfig(horizon_nights=4, horizon_users=150)
    states = _states(300)
    greedy = _horizon(ResponseGreedyPolicy(CATALOG, response), states, response, CATALOG, gate)
    assert greedy["horizon_nights"] == 4.0
    assert greedy["horizon_lower"] <= greedy["horizon_value"] <= greedy["horizon_upper"]
    # greedy on the model rests only where every offer loses: its rests add value
    assert 0.0 < greedy["horizon_rest_share"] < 1.0 and greedy["horizon_rests_value"] > 0.0
    resting = _horizon(FixedActionPolicy(CATALOG, CATALOG.rest_id), states, response, CATALOG, gate)
    assert resting["horizon_value"] == 0.0 and resting["horizon_rest_share"] == 1.0
    # resting everyone forgoes its first allowed offer, which the model values above 0 on these users
    assert resting["horizon_rests_value"] < 0 and resting["horizon_rests_upper"] < 0
