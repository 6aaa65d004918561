"""Tests of `recsys.data.logged_offers.load_logged_offers`: the one reader of logged offers, for
learning (`OfferLog.response_fit_logs`) and off-policy evaluation (`recsys.evaluation.ope`).

The consent of each logged decision is the one the user had when the offer was sent, read from the
users row, the recorded unsubscribes and the offers sent: a user who unsubscribed later was still
reachable then, and one who consents today may not have been.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pytest
from psycopg2 import sql

from recsys.config.catalog import ALLOWED_CHANNELS, Catalog, load_catalog
from recsys.config.features import PRIOR_SHRUNK_FEATURES
from recsys.data.features import partition_name
from recsys.data.logged_offers import TEXT_COLUMNS, load_logged_offers
from recsys.db import Connection
from recsys.evaluation import ope
from recsys.model.observation import CONSENT_FEATURES, FEATURE_NAMES

DAY = dt.date(2025, 6, 10)
SENT = dt.datetime(2025, 6, 10, 10, tzinfo=dt.UTC)
CONSENT_COLS = [FEATURE_NAMES.index(name) for name in CONSENT_FEATURES]
PRIOR_COLUMNS = [name for name, _, _ in PRIOR_SHRUNK_FEATURES]


def _at(days: float) -> dt.datetime:
    """The send time moved by `days`."""
    return SENT + dt.timedelta(days=days)


# user: (users row or None: (email_opt_in, sms_opt_in, push_opt_in, email, phone, push_token, updated_at),
#        unsubscribes [(channel, at)], the channel of the logged offer, expected consent, expected reachable)
USERS = {
    # Unsubscribed from email five days after the send (the users row then turned email off):
    # consented to email when the offer was sent.
    1: (
        (False, True, False, "a@x.org", "+100", None, _at(5)),
        [("email", _at(5))],
        "sms",
        (True, True, False),
        (True, True, False),
    ),
    # Unsubscribed from sms three days before the send; a users row granted sms again two days
    # after it: no sms consent when the offer was sent, though there is today.
    2: (
        (True, True, False, "b@x.org", "+200", None, _at(2)),
        [("sms", _at(-3))],
        "email",
        (True, False, False),
        (True, False, False),
    ),
    # The users row is older than the send: its consent held then. No push token: push consent
    # without a way to reach the user.
    3: (
        (True, False, True, "c@x.org", None, None, _at(-30)),
        [],
        "email",
        (True, False, True),
        (True, False, False),
    ),
    # No users row at all: the offer reached the user on push, nothing else is known.
    4: (None, [], "push", (False, False, True), (False, False, True)),
}


@pytest.fixture
def logged(db: Connection) -> Iterator[Connection]:
    """One logged offer per user of USERS on DAY, with features of DAY; rolled back afterwards.
    What other tests' campaigns left behind (sent offers, rests: they would be logged too) is set
    aside for the test."""
    with db.cursor() as cur:
        cur.execute("delete from recsys.offer_events")
        cur.execute("delete from recsys.campaign_decisions")
        cur.execute("delete from recsys.campaign_offers")
        for user, (row, unsubscribes, channel, _, _) in USERS.items():
            if row is not None:
                cur.execute(
                    "insert into recsys.users (user_id, email_opt_in, sms_opt_in, push_opt_in, email, phone,"
                    " push_token, updated_at, load_id) values (%s, %s, %s, %s, %s, %s, %s, %s, 0)",
                    (user, *row),
                )
            for revoked, at in unsubscribes:
                cur.execute(
                    "insert into recsys.consent_revocations (user_id, channel, revoked_at) values (%s, %s, %s)",
                    (user, revoked, at),
                )
            cur.execute(
                "insert into recsys.offer_history (offer_id, user_id, sent_at, offer_type, offer_value, channel,"
                " timing, propensity, opened, clicked, converted, revenue, load_id)"
                " values (%s, %s, %s, 'discount', 10, %s, 'immediate', 0.25, true, false, false, 0, 0)",
                (f"o{user}", user, SENT, channel),
            )
        cur.execute(
            sql.SQL("create table {} partition of recsys.user_features for values in (%s)").format(
                sql.Identifier("recsys", partition_name(DAY))
            ),
            (DAY,),
        )
        cur.execute(
            sql.SQL(
                "insert into recsys.user_features (as_of, user_id, recency_days, frequency_sessions, monetary_value,"
                " engagement_score, discount_sensitivity, free_shipping_preference, email_responsiveness,"
                " sms_responsiveness, push_responsiveness, days_since_last_purchase, purchase_count, offers_last_7d,"
                " days_since_last_offer, top_category, r_score, f_score, m_score, segment, {columns}) "
                "select %s, u, 10, 5, 100, 0.3, 0.5, 0.5, 0.3, 0.3, 0.3, 20, 2, 0, 365, 'books', 3, 3, 3, 'loyal', "
                "{values} from unnest(%s::bigint[]) as u"
            ).format(
                columns=sql.SQL(", ").join(map(sql.Identifier, PRIOR_COLUMNS)),
                values=sql.SQL(", ").join([sql.Literal(0.2)] * len(PRIOR_COLUMNS)),
            ),
            (DAY, list(USERS)),
        )
    yield db
    db.rollback()


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _expected(index: int) -> np.ndarray:
    return np.array([USERS[u][index] for u in sorted(USERS)], dtype=bool)


def _channel_mask(catalog: Catalog, mask: np.ndarray) -> np.ndarray:
    """(n, 3): whether each channel's actions are allowed (all or none of them, checked)."""
    out = np.zeros((len(mask), len(ALLOWED_CHANNELS)), dtype=bool)
    for k, channel in enumerate(ALLOWED_CHANNELS):
        cols = mask[:, [a.action_id for a in catalog.actions if a.channel == channel]]
        assert (cols.all(axis=1) | ~cols.any(axis=1)).all()
        out[:, k] = cols.all(axis=1)
    return out


def test_consent_is_the_one_when_the_offer_was_sent(logged: Connection, catalog: Catalog) -> None:
    logs = load_logged_offers(logged, catalog)
    assert logs.rows["user_id"].tolist() == sorted(USERS)
    consent = logs.rows[[f"{c}_consent" for c in ALLOWED_CHANNELS]].to_numpy(dtype=bool)
    np.testing.assert_array_equal(consent, _expected(3))
    np.testing.assert_array_equal(logs.obs[:, CONSENT_COLS], _expected(3).astype(np.float32))
    np.testing.assert_array_equal(_channel_mask(catalog, logs.mask), _expected(4))
    # The logged action is always one the user could receive: it was sent.
    assert logs.mask[np.arange(len(logs)), logs.action_ids].all()


def test_learning_and_evaluation_read_the_same_consent(logged: Connection, catalog: Catalog) -> None:
    learning = load_logged_offers(logged, catalog, until=DAY + dt.timedelta(days=1), by="send").response_fit_logs(
        catalog
    )
    assert learning.counts == {"logged": 4, "used": 4, "without_features": 0, "outside_catalog": 0, "rests": 0}
    np.testing.assert_array_equal(learning.obs[:, CONSENT_COLS], _expected(3).astype(np.float64))

    evaluation = ope.load_logged_offers(logged, catalog, until=DAY + dt.timedelta(days=1))
    assert len(evaluation) == 4 and evaluation.skipped == {"no_features": 0, "no_propensity": 0}
    np.testing.assert_array_equal(evaluation.obs.astype(np.float64), learning.obs)
    np.testing.assert_array_equal(_channel_mask(catalog, evaluation.mask), _expected(4))


def test_windows_by_decision_and_by_send(logged: Connection, catalog: Catalog) -> None:
    assert len(load_logged_offers(logged, catalog, since=DAY, until=DAY + dt.timedelta(days=1))) == 4
    assert len(load_logged_offers(logged, catalog, until=DAY)) == 0
    assert len(load_logged_offers(logged, catalog, since=DAY + dt.timedelta(days=1), by="send")) == 0
    with pytest.raises(ValueError, match="by must be 'decision' or 'send'"):
        load_logged_offers(logged, catalog, by="sent")  # type: ignore[arg-type]


# --- rests: the policy chose no offer -------------------------------------------------------------


@pytest.fixture
def with_rests(logged: Connection) -> Connection:
    """The logged offers of DAY, and DAY's decisions of a published run: user 1 rested (propensity
    0.8), user 2 held out, user 3 skipped; and a rest of today's run (its night not closed yet) and
    one of a run still scoring, neither of which is logged yet."""
    today = dt.datetime.now(dt.UTC).date()
    with logged.cursor() as cur:
        cur.execute(
            "insert into recsys.campaign_runs (run_id, campaign_date, state) values"
            " ('night', %s, 'published'), ('tonight', %s, 'published'), ('unfinished', %s, 'scoring')",
            (DAY, today, DAY - dt.timedelta(days=1)),
        )
        for day in {DAY, today, DAY - dt.timedelta(days=1)}:  # a night's decisions live in its partition
            cur.execute("select recsys.ensure_decisions_partition(%s)", (day,))
        cur.execute(
            "insert into recsys.campaign_decisions (campaign_date, run_id, user_id, decision, action_id,"
            " propensity, features_date, skip_reason) values"
            " (%(d)s, 'night', 1, 'rest', 108, 0.8, %(d)s, null),"
            " (%(d)s, 'night', 2, 'holdout', 108, 1, %(d)s, null),"
            " (%(d)s, 'night', 3, 'skipped', null, null, %(d)s, 'cooldown'),"
            " (%(t)s, 'tonight', 1, 'rest', 108, 0.5, %(t)s, null),"
            " (%(u)s, 'unfinished', 4, 'rest', 108, 0.5, %(u)s, null)",
            {"d": DAY, "t": today, "u": DAY - dt.timedelta(days=1)},
        )
    return logged


def test_a_rest_is_logged_as_the_rest_action_with_its_propensity_and_nothing_opened(
    with_rests: Connection, catalog: Catalog
) -> None:
    logs = load_logged_offers(with_rests, catalog)
    rows = logs.rows
    assert len(logs) == 5  # the four offers and the one rest; no holdout, no skipped user
    rest = rows["decision"] == "rest"
    assert rest.sum() == 1 and rows.loc[rest, "user_id"].tolist() == [1]
    assert logs.is_rest.tolist() == rest.tolist()
    (i,) = np.flatnonzero(rest)
    assert logs.action_ids[i] == catalog.rest_id and logs.propensity[i] == 0.8
    assert rows.loc[i, "features_as_of"] == DAY and rows.loc[i, "offer_id"] == f"rest:{DAY}:1"
    assert not rows.loc[i, ["opened", "clicked", "converted", "unsubscribed"]].any()
    assert float(rows.loc[i, "revenue"]) == 0.0
    assert logs.mask[i, catalog.rest_id]  # the rest was allowed: some offer was
    assert (rows.loc[~rest, "decision"] == "offer").all()
    # the decisions off-policy evaluation reads include it; without rests, only the offers
    assert len(ope.load_logged_offers(with_rests, catalog)) == 5
    assert len(load_logged_offers(with_rests, catalog, rests=False)) == 4


def test_the_response_model_never_learns_from_a_rest(with_rests: Connection, catalog: Catalog) -> None:
    learning = load_logged_offers(with_rests, catalog, by="send").response_fit_logs(catalog)
    assert learning.counts == {"logged": 5, "used": 4, "without_features": 0, "outside_catalog": 0, "rests": 1}
    assert len(learning.usable) == 5 and learning.usable.sum() == 4
    # the night's fit does not even read them
    fit = load_logged_offers(with_rests, catalog, by="send", rests=False).response_fit_logs(catalog)
    assert fit.counts["logged"] == 4 and fit.counts["rests"] == 0


def test_off_policy_evaluation_counts_a_rest_with_reward_zero(with_rests: Connection, catalog: Catalog) -> None:
    from recsys.model.baselines import FixedActionPolicy, UniformRandomPolicy

    logs = ope.load_logged_offers(with_rests, catalog)
    always_rest = FixedActionPolicy(catalog, catalog.rest_id)
    # whatever the reward function and the reward model make of it, the rest is worth 0
    five, one = (lambda rows: np.full(len(rows), 5.0)), (lambda obs, a: np.ones(len(a)))
    rested = ope.off_policy_evaluation(
        with_rests, always_rest, catalog=catalog, reward_fn=five, q_fn=one, logs=logs, n_boot=0
    )
    assert rested["logged"].value == pytest.approx(4 * 5.0 / 5)  # five decisions, the rest at 0
    assert rested["ips"].value == 0.0 and rested["dm"].value == 0.0 and rested["dr"].value == 0.0
    # a policy that rests half the time is credited its importance-weighted rest at 0, and offers at 5
    uniform = UniformRandomPolicy(catalog)
    target = ope.target_probabilities(uniform, logs)
    estimates = ope.off_policy_evaluation(with_rests, uniform, catalog=catalog, reward_fn=five, logs=logs, n_boot=0)
    offers = ~logs.is_rest
    assert target[logs.is_rest][0] > 0
    assert estimates["ips"].value == pytest.approx((target[offers] / 0.25 * 5.0).sum() / 5)


def test_decisions_on_a_date_built_before_the_prior_columns_count_as_without_features(
    logged: Connection, catalog: Catalog
) -> None:
    """Null prior-shrunk columns (a date built before migration 013) are never read as zeros: the
    decisions count as without features, so evaluation leaves them out and says so."""
    with logged.cursor() as cur:
        cur.execute(
            sql.SQL("update recsys.user_features set {} where user_id = %s").format(
                sql.SQL(", ").join(sql.SQL("{} = null").format(sql.Identifier(name)) for name in PRIOR_COLUMNS)
            ),
            (min(USERS),),
        )
    logs = load_logged_offers(logged, catalog)
    assert logs.rows["has_features"].tolist() == [u != min(USERS) for u in sorted(USERS)]
    assert not logs.obs[0].any() and np.isfinite(logs.obs).all()
    assert logs.evaluable().skipped == {"no_features": 1, "no_propensity": 0}
    assert len(logs.evaluable()) == len(USERS) - 1


def test_every_text_column_of_the_view_is_read_as_text(db: Connection) -> None:
    """The reader types each text column of v_logged_offers itself: one left to pandas' guess
    (segment, empty on decisions without features) is mixed-typed, with a warning, on large reads."""
    with db.cursor() as cur:
        cur.execute(
            "select column_name from information_schema.columns where table_schema = 'recsys'"
            " and table_name = 'v_logged_offers' and data_type in ('text', 'character varying')"
        )
        text_columns = {name for (name,) in cur.fetchall()}
    assert "segment" in text_columns
    assert text_columns == set(TEXT_COLUMNS)
