"""Tests of `recsys.config.reward` and `recsys.model.response`: reward rules, priors, fitting from logged offers.

The fit is checked on logs drawn from a known logistic ground truth (written straight into
`recsys.user_features` and `recsys.offer_history`), so the direction of every effect is known; the
point-in-time test loads generated data and lets the fit build the missing feature dates.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from psycopg2 import sql

from recsys.benchmark.synth.generate import generate_data
from recsys.config.catalog import DEFAULT_CONFIG, Catalog, load_catalog
from recsys.config.features import PRIOR_SHRUNK_FEATURES
from recsys.config.reward import RewardRules, load_reward_rules
from recsys.config.settings import Settings
from recsys.data.extract import extract_path
from recsys.data.features import FEATURE_COLUMNS, build_features, feature_partitions, partition_name
from recsys.data.logged_offers import fit_response_model, load_logged_offers
from recsys.data.states import load_states
from recsys.db import Connection, fetch_all
from recsys.errors import ConfigError
from recsys.model.observation import FEATURE_NAMES, FEATURES, N_FEATURES, normalise
from recsys.model.response import ResponseModel, prior_response_model
from recsys.model.response_fit import FitConfig, format_fit_report

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
PRIOR_COLUMNS = [name for name, _, _ in PRIOR_SHRUNK_FEATURES]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="module")
def rules() -> RewardRules:
    return load_reward_rules()


def _user(**raw: float) -> np.ndarray:
    """One observation from raw feature values (defaults: an average, reachable user)."""
    values = {
        "recency_days": 10,
        "frequency_sessions": 5,
        "monetary_value": 120,
        "engagement_score": 0.3,
        "discount_sensitivity": 0.3,
        "free_shipping_preference": 0.3,
        "email_responsiveness": 0.33,
        "sms_responsiveness": 0.33,
        "push_responsiveness": 0.33,
        "days_since_last_purchase": 20,
        "purchase_count": 3,
        "offers_last_7d": 0,
        "days_since_last_offer": 30,
        "morning_share": 1 / 3,
        "evening_share": 1 / 3,
        "category_focus": 0.5,
        **{f"{c}_open_rate": 0.2 for c in ("email", "sms", "push")},
        **{f"{c}_click_rate": 0.1 for c in ("email", "sms", "push")},
        **{f"{t}_click_rate": 0.1 for t in ("discount", "free_shipping", "recommendation", "bundle")},
        **{f"{t}_convert_rate": 0.1 for t in ("discount", "free_shipping", "recommendation", "bundle")},
        "organic_discount_share": 0.2,
        "offer_discount_share": 0.2,
        "organic_free_shipping_share": 0.2,
        "offer_free_shipping_share": 0.2,
        "category_focus_posterior": 0.5,
        "order_value": 40,
        "email_consent": 1,
        "sms_consent": 1,
        "push_consent": 1,
    } | raw
    return normalise(np.array([[values[n] for n in FEATURE_NAMES]], dtype=np.float64))


def _action(catalog: Catalog, offer_type: str, value: float, channel: str, timing: str = "immediate") -> int:
    for a in catalog.actions:
        if (a.offer_type, a.value, a.channel, a.timing) == (offer_type, value, channel, timing):
            return a.action_id
    raise AssertionError(f"no action {offer_type} {value} {channel} {timing}")


def _config_with(tmp_path: Path, old: str, new: str) -> Path:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "config.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Reward rules and the prior


def test_reward_rules_parse_the_packaged_config(rules: RewardRules, catalog: Catalog) -> None:
    assert 0 < rules.margin_rate < 1
    assert set(rules.contact_cost) == set(catalog.channels)
    assert rules.offer_cost["free_shipping"].rule == "fee_on_conversion" and rules.offer_cost["free_shipping"].fee > 0
    assert rules.offer_cost["discount"].rule == "percent_of_order"
    assert rules.offer_cost["recommendation"].rule == "none"
    assert rules.offer_types["discount"].preference == "discount_sensitivity"
    assert RewardRules.from_dict(json.loads(json.dumps(rules.to_dict()))) == rules


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("margin_rate = 0.32", "margin_rate = 1.5", r"margin_rate must be <= 1"),
        ("push = 0.002\n", "", r"\[reward\]\.contact_cost: no entry for \['push'\]"),
        ("sms = 0.35", "sms = 1.2", r"open_rate: sms must be a probability"),
        ("unsubscribe_penalty = 4.0", "unsubscribe_penalty = 4.0\nunsubscribe_penality = 1", r"unknown keys"),
        ('preference = "discount_sensitivity"', 'preference = "shoe_size"', r"preference must be one of"),
        ('{ rule = "fee_on_conversion", fee = 5.5 }', '{ rule = "fee_on_conversion" }', r"free_shipping: missing fee"),
        ('value_effect = "decay"', 'value_effect = "sometimes"', r"value_effect must be one of"),
    ],
)
def test_bad_reward_config_is_refused_with_a_message(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = _config_with(tmp_path, old, new)
    with pytest.raises(ConfigError, match=message) as e:
        load_reward_rules(path)
    assert str(path) in str(e.value)


def test_prior_prefers_the_offer_that_matches_the_preference(catalog: Catalog, rules: RewardRules) -> None:
    model = prior_response_model(catalog, rules)
    deal_hunter = _user(discount_sensitivity=0.95, free_shipping_preference=0.05, engagement_score=0.05)
    shipper = _user(discount_sensitivity=0.05, free_shipping_preference=0.95, engagement_score=0.05)
    types = np.array([a.offer_type for a in catalog.actions])
    rewards = model.reward_matrix(np.vstack([deal_hunter, shipper]))
    assert types[rewards[0].argmax()] == "discount"
    assert types[rewards[1].argmax()] == "free_shipping"
    discount = _action(catalog, "discount", 15, "email")
    more, less = model.expected_reward(np.vstack([deal_hunter, shipper]), np.array([discount, discount]))
    assert more > less
    # The channel the user responds to more gets the higher open rate.
    open_email = model.stage_probabilities(
        np.vstack([_user(email_responsiveness=0.8), _user(email_responsiveness=0.1)]), np.array([discount] * 2)
    )["open"]
    assert open_email[0] > open_email[1]


def test_expected_reward_is_zero_without_consent(catalog: Catalog, rules: RewardRules) -> None:
    model = prior_response_model(catalog, rules)
    obs = np.vstack([_user(sms_consent=0), _user()])
    sms = _action(catalog, "discount", 10, "sms")
    reward = model.expected_reward(obs, np.array([sms, sms]))
    assert reward[0] == 0.0 and reward[1] != 0.0
    matrix = model.reward_matrix(obs)
    on_sms = np.array([a.channel == "sms" for a in catalog.actions])
    assert (matrix[0, on_sms] == 0).all() and (matrix[1, on_sms] != 0).all()
    assert np.allclose(matrix[np.arange(2), [sms, sms]], reward)


def test_reward_follows_the_documented_formula(catalog: Catalog, rules: RewardRules) -> None:
    model = prior_response_model(catalog, rules)
    obs = _user(monetary_value=300, purchase_count=3)  # basket 100
    for offer_type, value in (("discount", 10), ("free_shipping", 5), ("recommendation", 10), ("bundle", 15)):
        a = np.array([_action(catalog, offer_type, value, "email")])
        p = model.stage_probabilities(obs, a)
        cost = rules.offer_cost[offer_type]
        order = p["order_value"][0]
        assert order == pytest.approx(100.0, rel=1e-6)
        offer_cost = value / 100 * order if cost.rule == "percent_of_order" else cost.fee
        expected = (
            p["converted"][0] * (rules.margin_rate * order - offer_cost)
            - rules.contact_cost["email"]
            - rules.unsubscribe_penalty * p["open"][0] * p["unsubscribe"][0]
        )
        assert model.expected_reward(obs, a)[0] == pytest.approx(expected, rel=1e-9)


def test_reward_config_changes_rewards_without_code_changes(
    tmp_path: Path, catalog: Catalog, rules: RewardRules
) -> None:
    obs = np.vstack([_user(), _user(discount_sensitivity=0.9)])
    base = prior_response_model(catalog, rules).reward_matrix(obs)

    dearer_sms = load_reward_rules(_config_with(tmp_path, "sms = 0.03", "sms = 0.53"))
    changed = prior_response_model(catalog, dearer_sms).reward_matrix(obs)
    on_sms = np.array([a.channel == "sms" for a in catalog.actions])
    assert np.allclose(changed[:, on_sms], base[:, on_sms] - 0.5)
    assert np.array_equal(changed[:, ~on_sms], base[:, ~on_sms])

    keener = load_reward_rules(_config_with(tmp_path, "click_uplift = 2.0", "click_uplift = 4.0"))
    changed = prior_response_model(catalog, keener).reward_matrix(obs)
    is_discount = np.array([a.offer_type == "discount" for a in catalog.actions])
    assert (changed[:, is_discount] > base[:, is_discount]).all()
    assert np.array_equal(changed[:, ~is_discount], base[:, ~is_discount])

    # The same model re-priced with other rules.
    repriced = prior_response_model(catalog, rules).with_rules(dearer_sms).reward_matrix(obs)
    assert np.allclose(repriced[:, on_sms], base[:, on_sms] - 0.5)


def test_round_trip_through_json(catalog: Catalog, rules: RewardRules) -> None:
    model = prior_response_model(catalog, rules)
    model.params["click"].w[3] = 0.123  # not the prior any more
    model = ResponseModel(catalog, rules, model.params, {"kind": "test", "numbers": [1.5, 2]})
    stored = json.loads(json.dumps(model.to_dict()))
    again = ResponseModel.from_dict(stored, catalog)
    obs = np.vstack([_user(), _user(discount_sensitivity=0.9, sms_consent=0)])
    assert np.array_equal(again.reward_matrix(obs), model.reward_matrix(obs))
    assert again.fit_report == {"kind": "test", "numbers": [1.5, 2]}
    assert again.rules == rules

    other = Catalog(
        offer_types=("discount",),
        values=(10.0,),
        channels=("email",),
        timings=("immediate",),
        value_units={"discount": "percent_off"},
        timing_delay_minutes={"immediate": 0},
    )
    with pytest.raises(ConfigError, match="another catalog"):
        ResponseModel.from_dict(stored, other)
    with pytest.raises(ConfigError, match="format"):
        ResponseModel.from_dict({"format": "something else"})
    broken = json.loads(json.dumps(stored))
    broken["heads"]["open"]["w"] = [1.0]
    with pytest.raises(ConfigError, match="malformed"):
        ResponseModel.from_dict(broken, catalog)


def test_bad_inputs_to_the_model(catalog: Catalog, rules: RewardRules) -> None:
    model = prior_response_model(catalog, rules)
    with pytest.raises(ValueError, match="shape"):
        model.expected_reward(np.zeros((2, 5)), np.array([0, 1]))
    with pytest.raises(ValueError, match="action ids must be in"):
        model.expected_reward(_user(), np.array([catalog.n_actions]))


# --------------------------------------------------------------------------------------------
# Fitting on logs from a known logistic ground truth

TRUTH_DATES = [dt.date(2025, 3, 2) + dt.timedelta(days=i) for i in range(8)]
CHANNEL_OPEN_LOGIT = {"email": -2.2, "sms": -1.2, "push": -0.4}  # the prior says email > push: it is not


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _truth_open(obs: np.ndarray, channel: np.ndarray) -> np.ndarray:
    resp = obs[np.arange(len(obs)), np.array([COL[f"{c}_responsiveness"] for c in channel])]
    base = np.array([CHANNEL_OPEN_LOGIT[c] for c in channel])
    return _sigmoid(base + 4.0 * resp - 0.5 * 7 * obs[:, COL["offers_last_7d"]])


def _truth_click(obs: np.ndarray, offer_type: np.ndarray, value: np.ndarray) -> np.ndarray:
    ds, fsp = obs[:, COL["discount_sensitivity"]], obs[:, COL["free_shipping_preference"]]
    gain = np.where(offer_type == "discount", 5.0 * ds * value / 10, 0.0)
    gain += np.where(offer_type == "free_shipping", 3.0 * fsp, 0.0)
    return _sigmoid(-3.0 + gain)


def _truth_convert(obs: np.ndarray, offer_type: np.ndarray) -> np.ndarray:
    return _sigmoid(-1.5 + np.where(offer_type == "discount", 2.0 * obs[:, COL["discount_sensitivity"]], 0.0))


def _copy_rows(conn: Connection, table: str, columns: list[str], rows: list[list[object]]) -> None:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    buf.seek(0)
    statement = sql.SQL("copy {} ({}) from stdin with (format csv)").format(
        sql.Identifier("recsys", table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur:
        cur.copy_expert(statement.as_string(conn), buf)


def _write_truth_logs(conn: Connection, catalog: Catalog, users: int, send_share: float, seed: int) -> None:
    """Features for every user and date, and offers with outcomes drawn from the known truth."""
    rng, prior_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1000)
    with conn.cursor() as cur:
        for day in TRUTH_DATES:
            cur.execute(
                sql.SQL("create table if not exists {} partition of recsys.user_features for values in (%s)").format(
                    sql.Identifier("recsys", partition_name(day))
                ),
                (day,),
            )
    _copy_rows(
        conn,
        "users",
        ["user_id", "email_opt_in", "sms_opt_in", "push_opt_in", "email", "phone", "push_token", "load_id"],
        [[u, "t", "t", "t", f"u{u}@example.com", "+100", "tok", 0] for u in range(1, users + 1)],
    )
    feature_rows, offer_rows = [], []
    actions = catalog.actions
    for day in TRUTH_DATES:
        n = users
        raw = {
            "recency_days": rng.uniform(0, 60, n),
            "frequency_sessions": rng.integers(0, 20, n),
            "monetary_value": rng.gamma(2.0, 60.0, n),
            "engagement_score": rng.uniform(0, 1, n),
            "discount_sensitivity": rng.uniform(0, 1, n),
            "free_shipping_preference": rng.uniform(0, 1, n),
            "email_responsiveness": rng.uniform(0, 1, n),
            "sms_responsiveness": rng.uniform(0, 1, n),
            "push_responsiveness": rng.uniform(0, 1, n),
            "days_since_last_purchase": rng.uniform(0, 90, n),
            "purchase_count": rng.integers(1, 6, n),
            "offers_last_7d": rng.integers(0, 5, n),
            "days_since_last_offer": rng.uniform(0, 30, n),
            "morning_share": rng.uniform(0, 1, n),
            "evening_share": rng.uniform(0, 1, n),
            "category_focus": rng.uniform(0, 1, n),
            # from a stream of their own: the offers drawn below stay those of the seed
            **{c: prior_rng.uniform(0, 1, n) for c in PRIOR_COLUMNS},
        }
        for u in range(n):
            feature_rows.append(
                [
                    day,
                    u + 1,
                    *[raw[c][u] for c in FEATURE_COLUMNS[2:15]],
                    "home",
                    3,
                    3,
                    3,
                    "promising",
                    *[raw[c][u] for c in FEATURE_COLUMNS[20:]],
                    *[raw[c][u] for c in PRIOR_COLUMNS],
                ]
            )
        table = np.column_stack([raw[name] if name in raw else np.ones(n) for name in FEATURE_NAMES])
        obs = normalise(table)
        chosen = np.flatnonzero(rng.random(n) < send_share)
        a = rng.integers(0, catalog.n_offers, len(chosen))  # logs hold offers, never the rest
        offer_type = np.array([actions[i].offer_type for i in a])
        value = np.array([actions[i].value for i in a])
        channel = np.array([actions[i].channel for i in a])
        o = obs[chosen]
        opened = rng.random(len(a)) < _truth_open(o, channel)
        clicked = opened & (rng.random(len(a)) < _truth_click(o, offer_type, value))
        converted = clicked & (rng.random(len(a)) < _truth_convert(o, offer_type))
        for j, u in enumerate(chosen):
            act = actions[a[j]]
            revenue = round(60.0 * (1 - act.value / 100 if act.offer_type in ("discount", "bundle") else 1), 2)
            offer_rows.append(
                [
                    f"{day}-{u}",
                    u + 1,
                    f"{day}T10:00:00Z",
                    act.offer_type,
                    act.value,
                    act.channel,
                    act.timing,
                    "t" if opened[j] else "f",
                    "t" if clicked[j] else "f",
                    "t" if converted[j] else "f",
                    revenue if converted[j] else "",
                    0,
                ]
            )
    _copy_rows(conn, "user_features", [*FEATURE_COLUMNS, *PRIOR_COLUMNS], feature_rows)
    _copy_rows(
        conn,
        "offer_history",
        [
            "offer_id",
            "user_id",
            "sent_at",
            "offer_type",
            "offer_value",
            "channel",
            "timing",
            "opened",
            "clicked",
            "converted",
            "revenue",
            "load_id",
        ],
        offer_rows,
    )
    conn.commit()


def test_fit_recovers_a_known_logistic_truth_and_beats_the_prior(
    db: Connection, settings: Settings, catalog: Catalog, rules: RewardRules
) -> None:
    _write_truth_logs(db, catalog, users=2500, send_share=0.8, seed=11)
    as_of = TRUTH_DATES[-1] + dt.timedelta(days=1)
    model = fit_response_model(db, settings, catalog, rules, as_of, holdout_fraction=0.25, seed=3)
    prior = prior_response_model(catalog, rules)
    report = model.fit_report

    assert report["kind"] == "fitted"
    assert report["offers"]["without_features"] == 0 and report["feature_dates_built"] == 0
    assert report["offers"]["train"] + report["offers"]["holdout"] == report["offers"]["logged"]
    assert report["window"] == {"first_send_date": "2025-03-02", "last_send_date": "2025-03-09"}
    assert report["heads"]["unsubscribe"]["fitted"] is False
    for stage in ("open", "convert"):
        held = report["holdout"][stage]
        assert held["model"]["log_loss"] < held["prior"]["log_loss"], stage
        assert sum(row["n"] for row in held["model"]["reliability"]) == held["n"]
        assert 0 <= held["model"]["ece"] < 0.05
    assert report["holdout"]["open"]["model"]["ece"] < report["holdout"]["open"]["prior"]["ece"]
    assert "P(open)" in format_fit_report(report)

    discount = _action(catalog, "discount", 15, "email")
    free_shipping = _action(catalog, "free_shipping", 5, "email")

    def stage(model: ResponseModel, name: str, obs: list[np.ndarray], action: int) -> np.ndarray:
        return model.stage_probabilities(np.vstack(obs), np.array([action] * len(obs)))[name]

    # Opens: push beats email in the truth (the prior says the opposite), responsiveness and fatigue.
    push = _action(catalog, "discount", 15, "push")
    assert stage(model, "open", [_user()], push)[0] > stage(model, "open", [_user()], discount)[0]
    assert stage(prior, "open", [_user()], push)[0] < stage(prior, "open", [_user()], discount)[0]
    hi, lo = stage(model, "open", [_user(email_responsiveness=0.9), _user(email_responsiveness=0.1)], discount)
    assert hi > lo
    rested, tired = stage(model, "open", [_user(offers_last_7d=0), _user(offers_last_7d=5)], discount)
    assert rested > tired
    # Clicks: discount sensitivity drives discount clicks, free-shipping preference free-shipping clicks.
    hi, lo = stage(model, "click", [_user(discount_sensitivity=0.9), _user(discount_sensitivity=0.1)], discount)
    assert hi > lo + 0.05
    hi, lo = stage(
        model, "click", [_user(free_shipping_preference=0.9), _user(free_shipping_preference=0.1)], free_shipping
    )
    assert hi > lo
    # Conversions: discount-sensitive users convert on discounts more.
    hi, lo = stage(model, "convert", [_user(discount_sensitivity=0.9), _user(discount_sensitivity=0.1)], discount)
    assert hi > lo
    # The stored form carries the report.
    assert ResponseModel.from_dict(json.loads(json.dumps(model.to_dict())), catalog).fit_report == report


def test_few_logs_stay_close_to_the_prior(
    db: Connection, settings: Settings, catalog: Catalog, rules: RewardRules
) -> None:
    as_of = TRUTH_DATES[-1] + dt.timedelta(days=1)
    prior = prior_response_model(catalog, rules)
    rng = np.random.default_rng(0)
    scale = {"recency_days": 60, "frequency_sessions": 20, "monetary_value": 300, "days_since_last_purchase": 90}
    scale |= {"purchase_count": 5, "offers_last_7d": 4, "days_since_last_offer": 30, "order_value": 80}
    obs = normalise(rng.uniform(0, 1, (200, N_FEATURES)) * [scale.get(name, 1) for name in FEATURE_NAMES])
    actions = rng.integers(0, catalog.n_offers, 200)

    def distance(model: ResponseModel) -> float:
        fit, base = model.stage_probabilities(obs, actions), prior.stage_probabilities(obs, actions)
        return float(np.mean([np.abs(fit[s] - base[s]).mean() for s in ("open", "click", "convert")]))

    _write_truth_logs(db, catalog, users=3, send_share=1.0, seed=5)
    few = fit_response_model(db, settings, catalog, rules, as_of, holdout_fraction=0)
    assert few.fit_report["offers"]["train"] == 24
    assert "holdout" not in few.fit_report

    with db.cursor() as cur:
        cur.execute("truncate recsys.offer_history, recsys.users, recsys.user_features")
    db.commit()
    _write_truth_logs(db, catalog, users=800, send_share=0.8, seed=5)
    many = fit_response_model(db, settings, catalog, rules, as_of, holdout_fraction=0)
    assert distance(few) < 0.5 * distance(many)


def test_fit_without_logs_is_the_prior(
    db: Connection, settings: Settings, catalog: Catalog, rules: RewardRules
) -> None:
    model = fit_response_model(db, settings, catalog, rules, dt.date(2025, 1, 1))
    prior = prior_response_model(catalog, rules)
    assert model.fit_report["kind"] == "prior"
    assert model.fit_report["offers"]["logged"] == 0
    obs = _user()
    assert np.array_equal(model.reward_matrix(obs), prior.reward_matrix(obs))


def test_fit_uses_point_in_time_features_built_on_demand(
    db: Connection, settings: Settings, catalog: Catalog, rules: RewardRules, tmp_path: Path
) -> None:
    end = dt.date(2024, 3, 1)
    out = tmp_path / "shop"
    generate_data(users=250, days=14, seed=4, out=out, end_date=end)
    extract_path(db, settings, out, reference_at=dt.datetime(2024, 3, 1, tzinfo=dt.UTC))
    # the shop's past campaigns (campaign tables of other modules' tests are not this fixture's to empty)
    send_dates = {
        r["d"]
        for r in fetch_all(db, "select distinct features_as_of as d from recsys.v_offer_log where source = 'history'")
    }
    assert len(send_dates) > 5
    assert not fetch_all(db, "select 1 from recsys.v_logged_offers where has_features")

    # A partition that exists but was emptied (truncated) does not count as built.
    with db.cursor() as cur:
        cur.execute(
            sql.SQL("create table if not exists {} partition of recsys.user_features for values in (%s)").format(
                sql.Identifier("recsys", partition_name(max(send_dates)))
            ),
            (max(send_dates),),
        )
    db.commit()
    model = fit_response_model(db, settings, catalog, rules, end, holdout_fraction=0.2)
    assert model.fit_report["feature_dates_built"] == len(send_dates)
    assert send_dates <= {d for v in feature_partitions(db).values() for d in v}

    logs = load_logged_offers(db, catalog, until=end, by="send").response_fit_logs(catalog)
    assert logs.counts["used"] > 0
    assert logs.counts["used"] + logs.counts["without_features"] == logs.counts["logged"]
    design = [COL[n] for n in FEATURE_NAMES if not n.endswith("_consent")]
    build_features(db, settings, end)
    today = load_states(db, end)
    epoch = dt.date(1970, 1, 1)
    differs = 0
    for day in sorted(set(logs.send_day[logs.usable].tolist()))[-4:]:
        states = load_states(db, epoch + dt.timedelta(days=day))
        rows = np.flatnonzero(logs.usable & (logs.send_day == day))
        at = np.searchsorted(states.user_ids, logs.user_id[rows])
        assert np.array_equal(states.user_ids[at], logs.user_id[rows])
        # The offer sent on D is explained by the features as of D ...
        assert np.allclose(logs.obs[rows][:, design], states.obs[at][:, design], atol=1e-6)
        # ... not by what the system knows now.
        now = np.searchsorted(today.user_ids, logs.user_id[rows])
        assert np.array_equal(today.user_ids[now], logs.user_id[rows])
        differs += int((np.abs(today.obs[now][:, design] - logs.obs[rows][:, design]) > 1e-6).any(axis=1).sum())
    assert differs > 0

    # Only dates without any feature row are built again (the first day: nobody had events yet),
    # and the same data and seed give the same model.
    empty = fetch_all(
        db,
        "select d from unnest(%s::date[]) as d where not exists (select from recsys.user_features where as_of = d)",
        (sorted(send_dates),),
    )
    again = fit_response_model(db, settings, catalog, rules, end, holdout_fraction=0.2)
    assert again.fit_report["feature_dates_built"] == len(empty) < len(send_dates)
    assert again.to_dict()["heads"] == model.to_dict()["heads"]


def test_fit_report_numbers_are_plain_json(
    db: Connection, settings: Settings, catalog: Catalog, rules: RewardRules
) -> None:
    _write_truth_logs(db, catalog, users=300, send_share=0.5, seed=8)
    model = fit_response_model(db, settings, catalog, rules, TRUTH_DATES[-1] + dt.timedelta(days=1))
    text = json.dumps(model.to_dict(), allow_nan=False)
    assert not re.search(r"NaN|Infinity", text)
    assert FitConfig().l2_main == model.fit_report["config"]["l2_main"]

    # Only the offers of the last log_window_days count.
    recent = fit_response_model(
        db, settings, catalog, rules, TRUTH_DATES[-1] + dt.timedelta(days=1), config=FitConfig(log_window_days=3)
    )
    assert recent.fit_report["window"] == {"first_send_date": "2025-03-07", "last_send_date": "2025-03-09"}
    assert 0 < recent.fit_report["offers"]["logged"] < model.fit_report["offers"]["logged"]
    assert len(FEATURES) == N_FEATURES


def test_the_nights_model_is_refitted_on_every_user_after_the_held_out_report(
    db: Connection, settings: Settings, catalog: Catalog, rules: RewardRules
) -> None:
    _write_truth_logs(db, catalog, users=800, send_share=0.8, seed=5)
    as_of = TRUTH_DATES[-1] + dt.timedelta(days=1)
    refit = fit_response_model(db, settings, catalog, rules, as_of, holdout_fraction=0.25, seed=3)
    offers = refit.fit_report["offers"]
    assert offers["holdout"] > 0 and offers["final_fit"] == offers["train"] + offers["holdout"]
    assert {"open", "click", "convert"} <= set(refit.fit_report["holdout"])  # judged on unseen users
    assert refit.fit_report["seconds"]["refit"] > 0
    assert "refitted on" in format_fit_report(refit.fit_report)

    everyone = fit_response_model(db, settings, catalog, rules, as_of, holdout_fraction=0)
    train_only = fit_response_model(
        db, settings, catalog, rules, as_of, holdout_fraction=0.25, seed=3, config=FitConfig(refit_on_all=False)
    )
    assert train_only.fit_report["offers"]["final_fit"] == offers["train"]
    assert refit.fit_report["heads"]["open"]["rows"] == everyone.fit_report["heads"]["open"]["rows"]
    assert train_only.fit_report["heads"]["open"]["rows"] < everyone.fit_report["heads"]["open"]["rows"]
    for head in ("open", "click", "convert"):
        # warm-started from the training users' fit, the refit reaches the optimum of the fit on everyone
        np.testing.assert_allclose(refit.params[head].w, everyone.params[head].w, atol=2e-3)
        np.testing.assert_allclose(refit.params[head].gamma, everyone.params[head].gamma, atol=2e-3)
    assert not np.allclose(train_only.params["open"].w, everyone.params["open"].w, atol=2e-3)


def test_the_fit_stops_at_its_tolerance_near_the_optimum(
    db: Connection, settings: Settings, catalog: Catalog, rules: RewardRules
) -> None:
    _write_truth_logs(db, catalog, users=800, send_share=0.8, seed=11)
    as_of = TRUTH_DATES[-1] + dt.timedelta(days=1)

    def fit(tolerance: float) -> ResponseModel:
        config = FitConfig(tolerance=tolerance, max_iter=1000)
        return fit_response_model(db, settings, catalog, rules, as_of, holdout_fraction=0, config=config)

    tight, shipped, loose = fit(1e-13), fit(FitConfig().tolerance), fit(1e-4)
    iterations = [m.fit_report["heads"]["open"]["iterations"] for m in (tight, shipped, loose)]
    assert iterations[0] > iterations[1] > iterations[2]  # a looser tolerance stops sooner
    obs = np.vstack([_user(email_responsiveness=r) for r in np.linspace(0, 1, 50)])
    for head in ("open", "click", "convert"):
        # the shipped tolerance stops within a hair of the optimum; a much looser one does not
        np.testing.assert_allclose(shipped.params[head].w, tight.params[head].w, atol=2e-3)
    assert (
        np.abs(loose.reward_matrix(obs) - tight.reward_matrix(obs)).max()
        > np.abs(shipped.reward_matrix(obs) - tight.reward_matrix(obs)).max()
    )


def test_a_bounded_fit_keeps_the_recent_offers_weights_the_rest_and_stays_close_to_the_full_fit(
    db: Connection, settings: Settings, catalog: Catalog, rules: RewardRules
) -> None:
    _write_truth_logs(db, catalog, users=1500, send_share=0.8, seed=7)
    as_of = TRUTH_DATES[-1] + dt.timedelta(days=1)
    full = fit_response_model(db, settings, catalog, rules, as_of, holdout_fraction=0.2, seed=3)
    logged = full.fit_report["offers"]["logged"]
    assert full.fit_report["sample"] == {"bounded": False, "offers": logged}

    bounded = fit_response_model(
        db,
        settings,
        catalog,
        rules,
        as_of,
        holdout_fraction=0.2,
        seed=3,
        config=FitConfig(max_offers=6000, recent_days=2),
    )
    sample = bounded.fit_report["sample"]
    per_day = logged // len(TRUTH_DATES)
    assert sample["bounded"] and sample["offers"] == logged
    # every offer of the last two send dates is kept; the older ones fill the bound, weighted
    assert sample["recent"] == sample["recent_kept"] == pytest.approx(2 * per_day, rel=0.1)
    assert (
        sample["recent_kept"] + sample["older_kept"]
        == 6000
        == sum(bounded.fit_report["offers"][k] for k in ("train", "holdout"))
    )
    assert sample["older_weight"] == pytest.approx(sample["older"] / sample["older_kept"], rel=1e-5)
    assert bounded.fit_report["heads"]["open"]["rows"] < full.fit_report["heads"]["open"]["rows"]

    # Under two thirds of the logs, reweighted, recover the truth's open rates nearly as well as all of them,
    # and far better than the prior.
    rng = np.random.default_rng(1)
    obs = np.vstack(
        [
            _user(email_responsiveness=r, offers_last_7d=k)
            for r, k in zip(rng.uniform(0, 1, 300), rng.integers(0, 5, 300), strict=True)
        ]
    )
    actions = np.array([_action(catalog, "discount", 15, "email")] * 300)
    truth = _truth_open(obs, np.array(["email"] * 300))

    def error(model: ResponseModel) -> float:
        return float(np.abs(model.stage_probabilities(obs, actions)["open"] - truth).mean())

    assert error(bounded) < 1.5 * error(full) + 0.01
    assert error(bounded) < 0.5 * error(prior_response_model(catalog, rules))
    held = bounded.fit_report["holdout"]["open"]
    assert held["model"]["log_loss"] < held["prior"]["log_loss"]


def test_far_over_its_bound_the_fit_reads_a_weighted_database_sample(
    db: Connection, settings: Settings, catalog: Catalog, rules: RewardRules, caplog
) -> None:
    import logging

    _write_truth_logs(db, catalog, users=1500, send_share=0.8, seed=7)
    as_of = TRUTH_DATES[-1] + dt.timedelta(days=1)
    full = fit_response_model(db, settings, catalog, rules, as_of, holdout_fraction=0.2, seed=3)
    logged, used = full.fit_report["offers"]["logged"], full.fit_report["offers"]["used"]

    def bounded(seed: int) -> ResponseModel:
        config = FitConfig(max_offers=1500, recent_days=1)
        return fit_response_model(db, settings, catalog, rules, as_of, holdout_fraction=0.2, seed=seed, config=config)

    with caplog.at_level(logging.INFO, logger="recsys.data.logged_offers"):
        model = bounded(3)
    assert "reading more" not in caplog.text  # sized by the probe's share of usable offers: one read
    sample, offers = model.fit_report["sample"], model.fit_report["offers"]
    # read: every offer of the last day, and a share of the older ones (read_rate) sized to fill the bound
    assert 0 < sample["read_rate"] <= 0.5 and offers["logged"] < logged
    per_day = logged // len(TRUTH_DATES)
    assert sample["recent"] == sample["recent_kept"] == pytest.approx(per_day, rel=0.15)
    assert sample["recent_kept"] + sample["older_kept"] == 1500
    assert sample["recent_weight"] == 1.0
    assert sample["older_weight"] == pytest.approx(
        sample["older"] / sample["older_kept"] / sample["read_rate"], rel=1e-5
    )
    # the weights stand for every usable offer: over seeds, they add up to the full count
    totals = []
    for seed in range(6):
        s = bounded(seed).fit_report["sample"]
        totals.append(s["recent"] + s["older_kept"] * s["older_weight"])
    assert np.mean(totals) == pytest.approx(used, rel=0.05)
    held = model.fit_report["holdout"]["open"]
    assert held["model"]["log_loss"] < held["prior"]["log_loss"]  # it still learns the open rates


def test_a_read_that_falls_short_reads_again_with_the_share_it_measured(
    db: Connection, settings: Settings, catalog: Catalog, rules: RewardRules, monkeypatch, caplog
) -> None:
    import logging

    import recsys.data.logged_offers as logged_offers

    _write_truth_logs(db, catalog, users=1500, send_share=0.8, seed=7)
    as_of = TRUTH_DATES[-1] + dt.timedelta(days=1)
    monkeypatch.setattr(logged_offers, "_READ_MARGIN", 0.4)  # the first read keeps too few on purpose
    config = FitConfig(max_offers=1500, recent_days=1)
    with caplog.at_level(logging.INFO, logger="recsys.data.logged_offers"):
        model = fit_response_model(db, settings, catalog, rules, as_of, holdout_fraction=0.2, seed=3, config=config)
    [short] = [r.getMessage() for r in caplog.records if "reading more" in r.getMessage()]
    sampled, first, needed = (
        float(x) for x in re.findall(r"([0-9.]+) sampled offers read at rate ([0-9.]+), (\d+)", short)[0]
    )
    sample = model.fit_report["sample"]
    # the second read's rate: what the first measured, scaled to the need, with 5% for chance
    assert sample["read_rate"] == pytest.approx(first * 1.05 * needed / sampled, rel=1e-3)
    assert sample["recent_kept"] + sample["older_kept"] == 1500  # it filled the bound


def test_bounded_sample_weights_sum_to_the_offers_they_stand_for() -> None:
    from recsys.model.fit_sample import LoggedOffers, bounded_sample

    n = 10_000
    rng = np.random.default_rng(0)
    day0 = (dt.date(2025, 1, 1) - dt.date(1970, 1, 1)).days
    send_day = day0 + rng.integers(0, 30, n)
    usable = rng.random(n) < 0.9
    logs = LoggedOffers(
        user_id=rng.integers(0, 500, n),
        send_day=send_day,
        obs=rng.random((n, N_FEATURES)),
        type_idx=np.zeros(n, np.int64),
        value=np.ones(n),
        channel_idx=np.zeros(n, np.int64),
        timing_idx=np.zeros(n, np.int64),
        outcomes={"opened": (rng.random(n) < 0.3).astype(float)},
        revenue=np.zeros(n),
        usable=usable,
    )
    as_of = dt.date(2025, 1, 31)
    sample, report = bounded_sample(logs, as_of, max_offers=3000, recent_days=5, seed=4)
    recent = usable & (send_day >= day0 + 25)
    assert len(sample.user_id) == 3000 and sample.usable.all()
    assert report["recent_kept"] == report["recent"] == int(recent.sum())
    assert sample.weights().sum() == pytest.approx(usable.sum())  # the sample stands for every usable offer
    assert (sample.weights()[sample.send_day >= day0 + 25] == 1.0).all()
    # weighted open rate: an unbiased estimate of the rate on every usable offer
    rate = (sample.weights() * sample.outcomes["opened"]).sum() / sample.weights().sum()
    assert rate == pytest.approx(logs.outcomes["opened"][usable].mean(), abs=0.02)
    # the recent days alone over the bound: one uniform sample of everything
    small, report = bounded_sample(logs, as_of, max_offers=500, recent_days=5, seed=4)
    assert len(small.user_id) == 500 and small.weights().sum() == pytest.approx(usable.sum())
    # under the bound: every usable offer, weight 1
    whole, report = bounded_sample(logs, as_of, max_offers=None, recent_days=5, seed=4)
    assert report == {"bounded": False, "offers": int(usable.sum())} and (whole.weights() == 1).all()


def test_the_click_head_learns_an_offer_type_whose_appeal_peaks_at_a_middle_value(
    catalog: Catalog, rules: RewardRules
) -> None:
    """Clicks on recommendations (no configured value effect) peak at the middle number of products:
    the value's level draws that curve, which the value attribute alone (monotone in the value) cannot."""
    from recsys.model.fit_sample import LoggedOffers
    from recsys.model.response_fit import FitRequest, fit_response_model_to_logs

    n = 40_000
    rng = np.random.default_rng(2)
    day0 = (dt.date(2025, 1, 1) - dt.date(1970, 1, 1)).days
    offer_type = rng.integers(0, len(catalog.offer_types), n)
    value = np.asarray(catalog.values)[rng.integers(0, len(catalog.values), n)]
    middle = (np.asarray(catalog.offer_types)[offer_type] == "recommendation") & (value == np.median(catalog.values))
    clicked = (rng.random(n) < _sigmoid(-2.5 + 1.5 * middle)).astype(float)
    logs = LoggedOffers(
        user_id=rng.integers(0, 4000, n),
        send_day=day0 + rng.integers(0, 30, n),
        obs=np.vstack([_user()] * n).astype(np.float64),
        type_idx=offer_type,
        value=value,
        channel_idx=rng.integers(0, len(catalog.channels), n),
        timing_idx=rng.integers(0, len(catalog.timings), n),
        outcomes={"opened": np.ones(n), "clicked": clicked, "converted": np.zeros(n)},
        revenue=np.zeros(n),
        usable=np.ones(n, dtype=bool),
    )
    model = fit_response_model_to_logs(logs, FitRequest(catalog, rules, dt.date(2025, 2, 1), holdout_fraction=0))
    low, mid, high = (
        model.stage_probabilities(_user(), np.array([_action(catalog, "recommendation", v, "email")]))["click"][0]
        for v in sorted(catalog.values)
    )
    assert mid > low + 0.05 and mid > high + 0.05  # near the truth: 0.27 in the middle, 0.08 at either end
    assert mid == pytest.approx(_sigmoid(np.array(-1.0)), abs=0.04)
    assert low == pytest.approx(_sigmoid(np.array(-2.5)), abs=0.03)


def test_a_model_stored_before_the_level_attributes_reads_them_as_zero(catalog: Catalog, rules: RewardRules) -> None:
    from recsys.model.response_terms import ADDED_ATTRIBUTE_GROUPS, _Attributes

    params = prior_response_model(catalog, rules).params
    params["click"].w[3] = 0.123  # not the prior any more
    model = ResponseModel(catalog, rules, params)
    stored = json.loads(json.dumps(model.to_dict()))
    attrs = _Attributes.of(catalog)
    earlier = [i for i, g in enumerate(attrs.groups) if g not in ADDED_ATTRIBUTE_GROUPS]
    assert len(earlier) < len(attrs.names)
    stored["attributes"] = [attrs.names[i] for i in earlier]
    for head in stored["heads"].values():
        head["gamma"] = [head["gamma"][i] for i in earlier]
        head["D"] = [head["D"][i] for i in earlier]
    again = ResponseModel.from_dict(stored, catalog)
    obs = np.vstack([_user(), _user(discount_sensitivity=0.9, sms_consent=0)])
    assert np.array_equal(again.reward_matrix(obs), model.reward_matrix(obs))
    stored["attributes"] = stored["attributes"][::-1]
    with pytest.raises(ConfigError, match="attribute names"):
        ResponseModel.from_dict(stored, catalog)


def _synthetic_logs(catalog: Catalog, users: list[np.ndarray], seed: int, n: int = 40_000):
    """Logged offers of random actions to users drawn from `users`: every offer opened and clicked,
    none converted, unless the caller overwrites the outcomes."""
    from recsys.model.fit_sample import LoggedOffers

    rng = np.random.default_rng(seed)
    day0 = (dt.date(2025, 1, 1) - dt.date(1970, 1, 1)).days
    who = rng.integers(0, len(users), n)
    return (
        rng,
        who,
        LoggedOffers(
            user_id=rng.integers(0, 4000, n),
            send_day=day0 + rng.integers(0, 30, n),
            obs=np.vstack(users)[who].astype(np.float64),
            type_idx=rng.integers(0, len(catalog.offer_types), n),
            value=np.asarray(catalog.values)[rng.integers(0, len(catalog.values), n)],
            channel_idx=rng.integers(0, len(catalog.channels), n),
            timing_idx=rng.integers(0, len(catalog.timings), n),
            outcomes={"opened": np.ones(n), "clicked": np.ones(n), "converted": np.zeros(n)},
            revenue=np.zeros(n),
            usable=np.ones(n, dtype=bool),
        ),
    )


def test_the_conversion_reads_the_features_the_offer_types_name_as_their_preference(
    catalog: Catalog, rules: RewardRules
) -> None:
    """Discount conversions rise with the purchase count: the conversion's offer-type terms read it
    once the config names it as the discount's preference, and not before (a feature no offer type
    names only moves every offer type alike)."""
    from recsys.model.response_fit import FitRequest, fit_response_model_to_logs

    few, many = _user(purchase_count=0), _user(purchase_count=40)
    rng, who, logs = _synthetic_logs(catalog, [few, many], seed=4)
    discount = np.asarray(catalog.offer_types)[logs.type_idx] == "discount"
    logs.outcomes["converted"] = (rng.random(len(who)) < _sigmoid(-2.0 + 2.0 * (discount & (who == 1)))).astype(float)
    offer = [_action(catalog, "discount", 15, "email"), _action(catalog, "free_shipping", 15, "email")]

    def lift(rules: RewardRules) -> float:
        """How much more the discount converts than free shipping for many purchases than for few (log-odds)."""
        model = fit_response_model_to_logs(logs, FitRequest(catalog, rules, dt.date(2025, 2, 1), holdout_fraction=0))
        p = model.stage_probabilities(np.vstack([few, few, many, many]), np.array(offer * 2))["convert"]
        logit = np.log(p / (1 - p))
        return float((logit[2] - logit[3]) - (logit[0] - logit[1]))

    named = dataclasses.replace(
        rules,
        offer_types={
            **rules.offer_types,
            "discount": dataclasses.replace(rules.offer_types["discount"], preference="purchase_count"),
        },
    )
    assert lift(named) > 1.0  # the truth: 2.0
    assert lift(rules) == pytest.approx(0.0, abs=1e-9)


def test_the_recommendations_best_number_of_products_moves_with_the_category_focus(
    catalog: Catalog, rules: RewardRules
) -> None:
    """Focused users click most on the middle number of products, browsing users least: the curve's
    bend itself changes with the focus, which a value slope on the focus (a straight line in the
    value) cannot draw; the focus's slope per catalog value can."""
    from recsys.model.response_fit import FitRequest, fit_response_model_to_logs

    focused, browsing = _user(category_focus_posterior=0.9), _user(category_focus_posterior=0.1)
    rng, who, logs = _synthetic_logs(catalog, [focused, browsing], seed=5)
    recommendation = np.asarray(catalog.offer_types)[logs.type_idx] == "recommendation"
    middle = logs.value == np.median(catalog.values)
    fits = recommendation & np.where(who == 0, middle, ~middle)
    logs.outcomes["clicked"] = (rng.random(len(who)) < _sigmoid(-2.5 + 2.0 * fits)).astype(float)
    model = fit_response_model_to_logs(logs, FitRequest(catalog, rules, dt.date(2025, 2, 1), holdout_fraction=0))
    offers = np.array([_action(catalog, "recommendation", v, "email") for v in sorted(catalog.values)])
    focused_clicks = model.stage_probabilities(np.vstack([focused] * 3), offers)["click"]
    browsing_clicks = model.stage_probabilities(np.vstack([browsing] * 3), offers)["click"]
    assert focused_clicks[1] > max(focused_clicks[0], focused_clicks[2])
    assert browsing_clicks[1] < min(browsing_clicks[0], browsing_clicks[2])


def test_a_timings_open_rate_moves_with_the_time_of_day_a_user_shops(catalog: Catalog, rules: RewardRules) -> None:
    """Evening shoppers open the six-hour delay more: the open head's timings read the morning and
    evening shares; another feature moves every timing alike."""
    from recsys.model.response_fit import FitRequest, fit_response_model_to_logs

    users = [_user(evening_share=0.1), _user(evening_share=0.8), _user(purchase_count=0), _user(purchase_count=40)]
    rng, who, logs = _synthetic_logs(catalog, users, seed=6)
    late = np.asarray(catalog.timings)[logs.timing_idx] == "delay_6hours"
    logs.outcomes["opened"] = (rng.random(len(who)) < _sigmoid(-1.0 + 1.5 * (late & (who == 1)))).astype(float)
    logs.outcomes["clicked"] = np.zeros(len(who))  # a click implies an open
    model = fit_response_model_to_logs(logs, FitRequest(catalog, rules, dt.date(2025, 2, 1), holdout_fraction=0))
    offer = [_action(catalog, "discount", 15, "email", t) for t in ("delay_6hours", "immediate")]
    p = model.stage_probabilities(np.vstack([u for u in users for _ in offer]), np.array(offer * len(users)))["open"]
    gap = np.log(p / (1 - p)).reshape(len(users), 2) @ np.array([1.0, -1.0])  # 6 hours minus immediate, per user
    assert gap[1] - gap[0] > 1.0  # the truth: 1.5
    assert gap[3] - gap[2] == pytest.approx(0.0, abs=1e-9)
