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
