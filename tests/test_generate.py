"""Tests of `recsys.benchmark.synth`: the synthetic data files, the logging policy and the ground truth.

No database: the generator only writes files. Sizes are small so the module runs in seconds.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import openpyxl
import pytest

from recsys.benchmark.synth import generate as gen
from recsys.benchmark.synth.generate import (
    EVENT_COLUMNS,
    OFFER_COLUMNS,
    USER_COLUMNS,
    XLSX_MAX_ROWS,
    generate_data,
    truth_path_for,
)
from recsys.benchmark.synth.params import CHANNELS, SynthParams
from recsys.benchmark.synth.truth import GroundTruth
from recsys.config.catalog import load_catalog
from recsys.errors import GenerateError, RecsysError

END = dt.date(2026, 9, 1)
DAYS = 40
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One CSV data set shared by the read-only tests: 3,000 users over 40 days."""
    out = tmp_path_factory.mktemp("synth") / "data"
    summary = generate_data(users=3000, days=DAYS, seed=11, out=out, end_date=END)
    tables = {}
    for name in ("events", "users", "offers"):
        header, rows = _read_csv(out / f"{name}.csv")
        tables[name] = (header, rows)
    return {"out": out, "summary": summary, **tables}


# --- format ------------------------------------------------------------------------------------


def test_csv_has_the_contract_columns_and_counts(sample: dict) -> None:
    assert sample["events"][0] == list(EVENT_COLUMNS)
    assert sample["users"][0] == list(USER_COLUMNS)
    assert sample["offers"][0] == list(OFFER_COLUMNS)
    counts = sample["summary"].counts
    assert counts == {name: len(sample[name][1]) for name in ("events", "users", "offers")}
    assert counts["users"] == 3000
    assert sample["summary"].paths["events"] == sample["out"] / "events.csv"


def test_csv_values_are_well_formed(sample: dict) -> None:
    _, events = sample["events"]
    _, users = sample["users"]
    _, offers = sample["offers"]
    catalog = load_catalog()
    assert all(ISO_UTC.match(r["timestamp"]) for r in events)
    assert all(ISO_UTC.match(r["updated_at"]) for r in users)
    assert all(ISO_UTC.match(r["sent_at"]) for r in offers)
    assert {r["action"] for r in events} == {"view", "add_to_cart", "purchase"}
    assert {r["channel"] for r in events} <= {"web", "app", "email", "sms", "push"}
    assert len({r["event_id"] for r in events}) == len(events)
    assert len({r["offer_id"] for r in offers}) == len(offers)
    for r in events:
        flags = {r["discount_used"], r["free_shipping_used"]}
        if r["action"] == "purchase":
            assert float(r["amount"]) >= 0
            assert flags <= {"true", "false"}
        else:
            assert r["amount"] == "" and flags == {""}
    for r in users:
        assert {r["email_opt_in"], r["sms_opt_in"], r["push_opt_in"]} <= {"true", "false"}
        assert r["timezone"] and r["first_name"]
    for r in offers:
        assert r["offer_type"] in catalog.offer_types
        assert float(r["offer_value"]) in catalog.values
        assert r["channel"] in catalog.channels and r["timing"] in catalog.timings
        assert {r["opened"], r["clicked"], r["converted"]} <= {"true", "false"}
        assert float(r["revenue"]) >= 0
        assert (float(r["revenue"]) > 0) == (r["converted"] == "true")
        # A funnel: no click without an open, no conversion without a click.
        assert r["clicked"] == "false" or r["opened"] == "true"
        assert r["converted"] == "false" or r["clicked"] == "true"


def test_sessions_have_one_user_and_one_channel(sample: dict) -> None:
    _, events = sample["events"]
    seen: dict[str, tuple[str, str]] = {}
    for r in events:
        key = (r["user_id"], r["channel"])
        assert seen.setdefault(r["session_id"], key) == key
    sessions = len(seen)
    per_user_day = sessions / (3000 * DAYS)
    assert 0.05 <= per_user_day <= 0.15
    assert 3.0 <= len(events) / sessions <= 6.0


def test_users_are_spread_over_time_zones_on_both_sides_of_utc(sample: dict) -> None:
    _, users = sample["users"]
    zones = {r["timezone"] for r in users}
    assert {"America/Los_Angeles", "Asia/Tokyo", "Europe/Berlin", "UTC"} <= zones
    # Some users consent to nothing; addresses exist where consented.
    assert any(r["email_opt_in"] == r["sms_opt_in"] == r["push_opt_in"] == "false" for r in users)
    assert all(r["email"] for r in users if r["email_opt_in"] == "true" and r["updated_at"] < "2026-07")


def test_xlsx_workbook_has_three_sheets_with_real_datetimes(tmp_path: Path) -> None:
    out = tmp_path / "sample.xlsx"
    summary = generate_data(users=150, days=10, seed=3, out=out, end_date=END)
    assert summary.paths == {"events": out, "users": out, "offers": out}
    assert summary.truth_path == tmp_path / "sample.truth.npz" and summary.truth_path.exists()
    wb = openpyxl.load_workbook(out, read_only=True)
    assert wb.sheetnames == ["events", "users", "offers"]
    expected = {"events": EVENT_COLUMNS, "users": USER_COLUMNS, "offers": OFFER_COLUMNS}
    for name, columns in expected.items():
        rows = list(wb[name].iter_rows(values_only=True))
        assert list(rows[0]) == list(columns)
        assert len(rows) - 1 == summary.counts[name]
        body = [dict(zip(columns, r, strict=False)) for r in rows[1:]]
        time_col = {"events": "timestamp", "users": "updated_at", "offers": "sent_at"}[name]
        assert all(isinstance(r[time_col], dt.datetime) and r[time_col].tzinfo is None for r in body)
        assert all(r[time_col] < dt.datetime(2026, 9, 1) for r in body)
        if name == "offers":
            assert all(isinstance(r["opened"], bool) and 0 < r["propensity"] <= 1 for r in body)
        if name == "events":
            purchases = [r for r in body if r["action"] == "purchase"]
            assert purchases and all(isinstance(r["discount_used"], bool) for r in purchases)
            assert all(r.get("amount") is None for r in body if r["action"] != "purchase")
    wb.close()


# --- determinism ---------------------------------------------------------------------------------


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    args = {"users": 300, "days": 12, "end_date": END}
    generate_data(seed=5, out=tmp_path / "a", **args)
    generate_data(seed=5, out=tmp_path / "b", **args)
    generate_data(seed=6, out=tmp_path / "c", **args)
    a, b, c = _bytes(tmp_path / "a"), _bytes(tmp_path / "b"), _bytes(tmp_path / "c")
    assert a == b
    assert (tmp_path / "a.truth.npz").read_bytes() == (tmp_path / "b.truth.npz").read_bytes()
    assert all(a[name] != c[name] for name in a)
    assert (tmp_path / "a.truth.npz").read_bytes() != (tmp_path / "c.truth.npz").read_bytes()


def test_same_seed_gives_identical_xlsx_bytes(tmp_path: Path) -> None:
    generate_data(users=80, days=5, seed=9, out=tmp_path / "a.xlsx", end_date=END)
    generate_data(users=80, days=5, seed=9, out=tmp_path / "b.xlsx", end_date=END)
    assert (tmp_path / "a.xlsx").read_bytes() == (tmp_path / "b.xlsx").read_bytes()


# --- refusals --------------------------------------------------------------------------------------


def test_xlsx_refuses_more_users_than_a_sheet_holds_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "big.xlsx"
    with pytest.raises(GenerateError, match=r"1,048,576 users exceed the 1,048,575 rows .*--out .*big/"):
        generate_data(users=XLSX_MAX_ROWS + 1, days=1, seed=1, out=out, end_date=END)
    assert list(tmp_path.iterdir()) == []


def test_xlsx_refuses_too_many_events_after_simulating_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gen, "XLSX_MAX_ROWS", 500)
    out = tmp_path / "data" / "sample.xlsx"
    with pytest.raises(GenerateError, match=r"^[\d,]+ events exceed the 500 rows an \.xlsx sheet holds; write CSV"):
        generate_data(users=400, days=10, seed=1, out=out, end_date=END)
    assert not out.exists() and not truth_path_for(out).exists()
    assert not any(tmp_path.rglob("*"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": 0}, "--users must be an integer >= 1"),
        ({"days": -3}, "--days must be an integer >= 1"),
        ({"seed": -1}, "--seed must be an integer >= 0"),
        ({"fmt": "parquet"}, "unknown output format 'parquet'"),
        ({"fmt": "csv", "out": Path("x.xlsx")}, "CSV output is a folder"),
        ({"out": Path("events.csv")}, "give a folder"),
        ({"world": "flat"}, "world must be one of standard, shifted, got 'flat'"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_error(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"users": 10, "days": 2, "seed": 1, "out": tmp_path / "d", "end_date": END, **kwargs}
    if "out" in kwargs:
        args["out"] = tmp_path / kwargs["out"]
    with pytest.raises(RecsysError, match=re.escape(message)):
        generate_data(**args)
    assert list(tmp_path.iterdir()) == []


def test_truth_path_sits_beside_the_output() -> None:
    assert truth_path_for(Path("data/sample.xlsx")) == Path("data/sample.truth.npz")
    assert truth_path_for(Path("data/big/")) == Path("data/big.truth.npz")
    assert truth_path_for(Path("data/big")) == Path("data/big.truth.npz")


# --- time window and consent -------------------------------------------------------------------------


def test_everything_happens_inside_the_window_before_end_date(sample: dict) -> None:
    start = dt.datetime(2026, 9, 1, tzinfo=dt.UTC) - dt.timedelta(days=DAYS)
    end = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    times = [_ts(r["timestamp"]) for r in sample["events"][1]] + [_ts(r["sent_at"]) for r in sample["offers"][1]]
    assert min(times) >= start
    assert max(times) < end
    # The window is covered: something happens on its first and its last day.
    assert min(times) < start + dt.timedelta(days=1) and max(times) >= end - dt.timedelta(days=1)


def test_no_offer_on_a_channel_without_consent_at_send_time(sample: dict) -> None:
    _, users = sample["users"]
    _, offers = sample["offers"]
    window_start = dt.datetime(2026, 9, 1, tzinfo=dt.UTC) - dt.timedelta(days=DAYS)
    user = {r["user_id"]: r for r in users}
    revoked = 0
    for o in offers:
        u = user[o["user_id"]]
        if u[f"{o['channel']}_opt_in"] == "true":
            continue
        changed = _ts(u["updated_at"])
        # Consent can only have been there before an unsubscribe recorded inside the window.
        assert changed >= window_start, o
        assert _ts(o["sent_at"]) < changed, o
        revoked += 1
    # Unsubscribes happen and show in the users sheet.
    assert revoked > 0
    assert sum(_ts(u["updated_at"]) >= window_start for u in users) > 0
    # Users who consent to nothing (and never changed) never get an offer.
    silent = {
        r["user_id"]
        for r in users
        if r["email_opt_in"] == r["sms_opt_in"] == r["push_opt_in"] == "false" and _ts(r["updated_at"]) < window_start
    }
    assert silent and not any(o["user_id"] in silent for o in offers)


# --- the logging policy ------------------------------------------------------------------------------


def test_propensities_equal_the_documented_mixture(sample: dict) -> None:
    """Recompute pi(a | user, night) from the policy in the module docstring, independently."""
    _, users = sample["users"]
    _, events = sample["events"]
    _, offers = sample["offers"]
    catalog = load_catalog()
    window_start = dt.datetime(2026, 9, 1, tzinfo=dt.UTC) - dt.timedelta(days=DAYS)
    purchases = defaultdict(list)
    for e in events:
        if e["action"] == "purchase":
            purchases[e["user_id"]].append(_ts(e["timestamp"]))
    stable = {r["user_id"]: r for r in users if _ts(r["updated_at"]) < window_start}
    per_channel = len(catalog.offer_types) * len(catalog.values) * len(catalog.timings)
    checked = {True: 0, False: 0}
    for o in offers:
        u = stable.get(o["user_id"])
        if u is None:
            continue
        consented = [c for c in catalog.channels if u[f"{c}_opt_in"] == "true"]
        delay = dt.timedelta(minutes=catalog.timing_delay_minutes[o["timing"]])
        night = dt.datetime.combine((_ts(o["sent_at"]) - delay).date(), dt.time(), tzinfo=dt.UTC)
        recent = any(night - dt.timedelta(days=30) <= t < night for t in purchases[o["user_id"]])
        rule = (
            "recommendation" if recent else "discount",
            catalog.values[len(catalog.values) // 2],
            next(c for c in ("email", "push", "sms") if c in consented),
            catalog.timings[0],
        )
        sent = (o["offer_type"], float(o["offer_value"]), o["channel"], o["timing"])
        is_rule = sent == rule
        expected = 0.5 / (per_channel * len(consented)) + 0.5 * is_rule
        assert float(o["propensity"]) == pytest.approx(expected, rel=1e-12), o
        assert 0 < float(o["propensity"]) <= 1
        checked[is_rule] += 1
    # Both parts of the mixture were exercised, recent buyers included.
    assert checked[True] > 100 and checked[False] > 100


def test_conversions_appear_as_purchases_brought_by_the_offer_channel(sample: dict) -> None:
    _, events = sample["events"]
    _, offers = sample["offers"]
    by_user = defaultdict(list)
    for e in events:
        if e["action"] == "purchase":
            by_user[e["user_id"]].append(e)
    converted = [o for o in offers if o["converted"] == "true"]
    assert len(converted) >= 10
    for o in converted:
        sent = _ts(o["sent_at"])
        match = [
            e
            for e in by_user[o["user_id"]]
            if e["channel"] == o["channel"]
            and sent <= _ts(e["timestamp"]) < sent + dt.timedelta(hours=24)
            and e["amount"] == o["revenue"]
        ]
        assert len(match) == 1, o
        e = match[0]
        assert e["discount_used"] == ("true" if o["offer_type"] in ("discount", "bundle") else "false")
        assert e["free_shipping_used"] == ("true" if o["offer_type"] == "free_shipping" else "false")
        if o["offer_type"] == "free_shipping":
            assert float(e["amount"]) >= float(o["offer_value"])


# --- the ground truth ---------------------------------------------------------------------------------


def test_truth_round_trips_and_matches_the_users_sheet(sample: dict) -> None:
    summary = sample["summary"]
    truth = GroundTruth.load(summary.truth_path)
    _, users = sample["users"]
    assert truth.user_ids.tolist() == [int(r["user_id"]) for r in users]
    consent = np.array([[r[f"{c}_opt_in"] == "true" for c in CHANNELS] for r in users])
    assert (truth.consent == consent).all()
    assert truth.meta["seed"] == 11 and truth.meta["end_date"] == "2026-09-01" and truth.meta["days"] == DAYS
    # the simulated shop's past holds offers only: the truth's catalog is the offers, without the rest
    assert truth.meta["catalog_fingerprint"] == load_catalog().without_rest().fingerprint()
    assert truth.meta["generator_version"] == gen.GENERATOR_VERSION
    assert truth.params == SynthParams()
    assert truth.personalisation_report() == summary.report


def test_expected_value_agrees_with_value_matrix(sample: dict) -> None:
    truth = GroundTruth.load(sample["summary"].truth_path)
    rng = np.random.default_rng(0)
    ids = rng.choice(truth.user_ids, size=200, replace=False)
    k = rng.integers(0, 4, size=200)
    night = dt.date(2026, 9, 5)
    for consent in (True, False):
        matrix = truth.value_matrix(ids, night=night, offers_last_7d=k, respect_consent=consent)
        assert matrix.shape == (200, truth.n_actions)
        users = np.repeat(ids, truth.n_actions)
        actions = np.tile(np.arange(truth.n_actions), len(ids))
        flat = truth.expected_value(
            users, actions, night=night, offers_last_7d=np.repeat(k, truth.n_actions), respect_consent=consent
        )
        np.testing.assert_allclose(matrix.ravel(), flat, rtol=1e-12, atol=1e-15)
    # Consent: an action on a channel the user refused is worth exactly 0, and sending is not free.
    with_consent = truth.value_matrix(ids)
    refused = ~truth.consent[truth.index_of(ids)][:, truth.action_channel]
    assert refused.any() and (with_consent[refused] == 0).all()
    assert (truth.value_matrix(ids, respect_consent=False)[refused] != 0).all()
    # Fatigue lowers the value of the best offer.
    best = truth.oracle_actions(ids)
    tired = truth.expected_value(ids, best, offers_last_7d=5)
    fresh = truth.expected_value(ids, best, offers_last_7d=0)
    assert (tired[fresh > 0] < fresh[fresh > 0]).all()
    with pytest.raises(GenerateError, match="not in the ground truth"):
        truth.expected_value(np.array([10**9]), np.array([0]))


def test_logged_outcomes_follow_the_truth(sample: dict) -> None:
    """Open and conversion counts in the offers sheet match the truth's probabilities."""
    truth = GroundTruth.load(sample["summary"].truth_path)
    _, offers = sample["offers"]
    catalog = load_catalog()
    index = {(a.offer_type, a.value, a.channel, a.timing): a.action_id for a in catalog.actions}
    nights: dict[str, list[dt.date]] = defaultdict(list)
    rows = []
    for o in offers:
        delay = dt.timedelta(minutes=catalog.timing_delay_minutes[o["timing"]])
        night = (_ts(o["sent_at"]) - delay).date()
        before = [d for d in nights[o["user_id"]] if night - dt.timedelta(days=7) <= d < night]
        nights[o["user_id"]].append(night)
        action = index[(o["offer_type"], float(o["offer_value"]), o["channel"], o["timing"])]
        rows.append((night, int(o["user_id"]), action, len(before), o["opened"] == "true", o["converted"] == "true"))
    expected_open = expected_conv = 0.0
    var_open = var_conv = 0.0
    for night in sorted({r[0] for r in rows}):
        part = [r for r in rows if r[0] == night]
        ids = np.array([r[1] for r in part])
        resp = truth.response(
            truth.index_of(ids),
            np.array([r[2] for r in part]),
            night=night,
            offers_last_7d=np.array([r[3] for r in part]),
        )
        p_conv = resp.p_open * resp.p_click * resp.p_convert
        expected_open += resp.p_open.sum()
        var_open += (resp.p_open * (1 - resp.p_open)).sum()
        expected_conv += p_conv.sum()
        var_conv += (p_conv * (1 - p_conv)).sum()
    opened = sum(r[4] for r in rows)
    conv = sum(r[5] for r in rows)
    assert abs(opened - expected_open) < 4 * np.sqrt(var_open)
    assert abs(conv - expected_conv) < 4 * np.sqrt(var_conv)


def test_personalisation_matters_in_the_default_world(tmp_path: Path) -> None:
    summary = generate_data(users=5000, days=3, seed=2024, out=tmp_path / "d", end_date=END)
    report = summary.report
    assert report.n_users == 5000
    for comparison in (report.with_consent, report.ignoring_consent):
        assert comparison.oracle_mean > 0
        assert comparison.fixed_mean <= 0.70 * comparison.oracle_mean
        assert comparison.ratio == pytest.approx(comparison.fixed_mean / comparison.oracle_mean)
    truth = GroundTruth.load(summary.truth_path)
    best = truth.best_fixed_action(respect_consent=True)
    assert best == report.with_consent.fixed_action_id
    oracle = truth.oracle_actions(respect_consent=False)
    # The per-user best differs between users along every dimension of the offer.
    actions = [truth.catalog.actions[a] for a in oracle]
    assert len({a.offer_type for a in actions}) == 4
    assert len({a.channel for a in actions}) == 3
    assert len({a.timing for a in actions}) == 3
    text = summary.format_report()
    assert "per-user best" in text and f"{report.with_consent.ratio:.0%}" in text


def test_the_shifted_world_differs_from_the_standard_one_as_documented(tmp_path: Path) -> None:
    from recsys.benchmark.synth.response import offer_response
    from recsys.benchmark.synth.traits import norm_cdf, sigmoid

    summary = generate_data(users=4000, days=10, seed=5, out=tmp_path / "shifted", end_date=END, world="shifted")
    truth = GroundTruth.load(summary.truth_path)
    shifted, standard = truth.params, SynthParams()
    assert shifted.world == "shifted" and dataclasses.replace(shifted, world="standard") == standard
    tr = truth.traits

    def rank_corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a.argsort().argsort(), b.argsort().argsort())[0, 1])

    # affinities follow browsing and basket (the standard world draws them independently)
    assert rank_corr(tr.recommendation_affinity, tr.activity_rate) > 0.35
    assert rank_corr(tr.discount_sensitivity, tr.basket_mean) < -0.35
    assert rank_corr(tr.bundle_affinity, tr.basket_mean) > 0.25
    # the response on the same users and offers: probit links, compounding fatigue, cannibalisation
    idx = np.arange(tr.n)
    typ, val, ch = np.zeros(tr.n, int), np.full(tr.n, 15.0), np.zeros(tr.n, int)
    focus = tr.focus()

    def respond(params: SynthParams, k: int):
        return offer_response(
            params, tr, focus, idx, typ, val, ch, send_hour=tr.preferred_hour, offers_last_7d=np.full(tr.n, k),
            weekday_factor=1.0,
        )  # fmt: skip

    a, b = respond(shifted, 0), respond(standard, 0)
    logit = np.asarray(shifted.click_logit)[0] + shifted.discount_click * tr.discount_sensitivity * 1.5
    assert np.allclose(a.p_click, norm_cdf(logit / shifted.probit_scale))
    assert np.allclose(b.p_click, sigmoid(logit))
    assert np.allclose(a.p_open, b.p_open)  # no offers in the last 7 nights: no fatigue either way
    share = np.minimum(shifted.cannibalisation_cap, shifted.cannibalisation_per_session_rate * tr.activity_rate)
    assert np.allclose(b.net_value - a.net_value, share * tr.basket_mean * shifted.margin_rate)
    tired_shifted, tired_standard = respond(shifted, 4).p_open, respond(standard, 4).p_open
    capped = b.p_open >= 0.99
    ratio = tired_shifted[~capped] / tired_standard[~capped]
    assert np.allclose(ratio, np.exp(-tr.fatigue[~capped] * (4 * 5 / 4 - 4)))  # k (k + 1) / 4 against k
