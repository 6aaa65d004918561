"""The fixed-cohort valuation of `recsys simulate` and the reference policies' own loops under the
truth, on a tiny generated shop (no database: the loops are pure numpy on the truth)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from recsys.benchmark.simulate import cohort as co
from recsys.benchmark.synth.generate import generate_data, truth_path_for
from recsys.benchmark.synth.truth import GroundTruth
from recsys.model.observation import N_FEATURES

FIRST = dt.date(2026, 10, 1)
NIGHTS = 6
DATES = [FIRST + dt.timedelta(days=i) for i in range(NIGHTS)]


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> GroundTruth:
    out: Path = tmp_path_factory.mktemp("cohort") / "shop"
    generate_data(users=300, days=20, seed=5, out=out, end_date=FIRST)
    return GroundTruth.load(truth_path_for(out))


def _cohort(truth: GroundTruth, *, cap: int = 7, prior: np.ndarray | None = None) -> co.Cohort:
    ids = np.sort(truth.user_ids)
    idx = truth.index_of(ids)
    n = len(ids)
    obs = np.random.default_rng(0).random((n, N_FEATURES))
    return co.Cohort(
        user_ids=ids,
        idx=idx,
        channel_ok=truth.consent[idx].copy(),
        prior=np.zeros((n, 7)) if prior is None else prior,
        obs=obs,
        cap=cap,
    )


def _run(truth: GroundTruth, c: co.Cohort, held: np.ndarray | None = None) -> co.CohortValues:
    ledger = co.CohortLedger(c, NIGHTS)
    if held is not None:
        ledger.held[:] = held
    return co.reference_values(truth, ledger, DATES, co.ValueRange(2, NIGHTS), seed=1)


def test_the_policy_counts_every_cohort_user_every_night_and_no_offer_is_zero(truth: GroundTruth) -> None:
    c = _cohort(truth)
    ledger = co.CohortLedger(c, NIGHTS)
    sent = c.user_ids[:10]
    outsider = np.array([c.user_ids.max() + 1_000])  # not in the cohort: ignored
    ledger.record(0, np.concatenate([sent, outsider]), np.concatenate([np.full(10, 2.0), [99.0]]), c.user_ids[10:12])
    assert ledger.policy.shape == (NIGHTS, len(c))
    assert ledger.policy[0, :10].tolist() == [2.0] * 10
    assert (ledger.policy[0, 10:] == 0).all() and (ledger.policy[1:] == 0).all()
    assert ledger.held[0, 10:12].all() and ledger.held.sum() == 2
    assert ledger.sent[0, :10].tolist() == [1.0] * 10 and ledger.sent.sum() == 10
    values = co.reference_values(truth, ledger, DATES, co.ValueRange(1, 1), seed=1)
    night = values.night(0)["policy"]
    # the mean is over the whole cohort: 10 users worth 2, everybody else 0 (never missing)
    assert night.n == len(c)
    assert night.mean == pytest.approx(20.0 / len(c))


def test_unsubscribed_users_count_zero_and_the_oracle_tops_the_fixed_offer(truth: GroundTruth) -> None:
    c = _cohort(truth)
    c.channel_ok[:50] = False  # unsubscribed from everything before night 1
    values = _run(truth, c)
    for name in co.COHORT_ROWS:
        v = values.values[name]
        assert v.shape == (NIGHTS, len(c))
        assert (v[:, :50] == 0).all(), name
    assert (values.sends["random"][:, :50] == 0).all()
    sl = co.ValueRange(2, NIGHTS).slice()
    oracle = values.values["oracle"][sl].sum(axis=0)
    fixed = values.values["fixed_cadence"][sl].sum(axis=0)
    # the oracle picks each user's own best (offer, cadence) or nothing: at least the fixed pair, user by user
    assert (oracle >= fixed - 1e-12).all()
    assert (oracle >= 0).all()
    summary = values.summary(co.ValueRange(2, NIGHTS))
    means = {k: v["mean"] for k, v in summary["values"].items()}
    assert means["oracle"] >= means["fixed_cadence"] >= means["random"]
    assert summary["bar"]["factor"] == co.BAR_FACTOR
    policy_minus = summary["policy_minus"]["fixed_cadence"]["mean"]
    assert policy_minus == pytest.approx(-means["fixed_cadence"])  # the policy sent nothing
    assert summary["bar"]["passes"] is False


def test_a_cadence_of_k_sends_every_k_nights_within_the_cap_and_holdout(truth: GroundTruth) -> None:
    c = _cohort(truth, cap=7)
    ok = c.channel_ok.any(axis=1)
    action = int(np.argmax(c.channel_ok[:, truth.action_channel].sum(axis=0)))
    held = np.zeros((NIGHTS, len(c)), bool)
    held[3, :20] = True
    for k in (1, 2, 3):
        _, sends = co.cadence_loop(truth, c, DATES, held, np.array([[action]]), np.array([[k]]))
        sent_nights = (sends[:, :, 0] > 0).any(axis=1)
        assert sent_nights.tolist() == [t % k == 0 for t in range(NIGHTS)], k
        if k == 1:
            assert (sends[3, :20, 0] == 0).all()  # held out that night: no offer
            can = c.channel_ok[:, truth.action_channel[action]] & ok
            assert (sends[0, can, 0] == 1.0).all()  # first send: everybody consenting still subscribed
    # the cap: 2 offers in the 7 nights before night 1 and a cap of 3 leave one send in the window
    capped = _cohort(truth, cap=3, prior=np.tile([0, 0, 0, 0, 0, 1, 1], (len(c), 1)).astype(float))
    _, sends = co.cadence_loop(truth, capped, DATES, held * False, np.array([[action]]), np.array([[1]]))
    per_user = (sends[:, :, 0] > 0).sum(axis=0)
    can = capped.channel_ok[:, truth.action_channel[action]]
    assert per_user[can].max() <= 3 and (sends[0, can, 0] > 0).all() and (sends[1, can, 0] == 0).all()


def test_fatigue_lowers_the_value_of_the_same_offer(truth: GroundTruth) -> None:
    action = np.array([[0]])
    fresh = _cohort(truth, cap=100)
    tired = _cohort(truth, cap=100, prior=np.full((len(fresh), 7), 1.0))
    held = np.zeros((1, len(fresh)), bool)
    v_fresh, _ = co.cadence_loop(truth, fresh, DATES[:1], held, action, np.array([[1]]))
    v_tired, _ = co.cadence_loop(truth, tired, DATES[:1], held, action, np.array([[1]]))
    worth = fresh.channel_ok[:, truth.action_channel[0]] & (v_fresh[0, :, 0] > 0)
    assert worth.sum() > 10
    assert (v_tired[0, worth, 0] < v_fresh[0, worth, 0]).all()


def test_the_reference_loops_are_deterministic_and_the_rule_sends_while_allowed(truth: GroundTruth) -> None:
    c = _cohort(truth)
    a, b = _run(truth, c), _run(truth, c)
    for name in co.COHORT_ROWS:
        np.testing.assert_array_equal(a.values[name], b.values[name])
    ok = c.channel_ok.any(axis=1)
    assert (a.sends["rule"][0] == ok).all()  # night 1: every user with a channel gets the rule's offer
    assert 1 <= a.fixed_cadence <= 7 and 0 <= a.fixed_action < truth.n_actions
    assert set(np.unique(a.oracle_cadence).tolist()) <= set(range(8))
    table = co.format_cohort_table(a, DATES, a.summary(co.ValueRange(2, NIGHTS)), "some offer")
    assert "bar: policy - 1.15 x fixed@k" in table and "every" in table
