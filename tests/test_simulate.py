"""`recsys simulate`: simulated users, sender and truth valuation, then whole simulations.

The simulated users are checked against the truth they are played from (responses, consent,
behaviour that the real loader accepts, with the right dates); the valuation against the truth's
own oracle; the end-to-end tests run the real nightly stages on PostgreSQL for two nights.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
import pytest

from recsys.benchmark import simulate as sim
from recsys.benchmark.synth.generate import generate_data, truth_path_for
from recsys.benchmark.synth.truth import GroundTruth
from recsys.config.catalog import load_catalog
from recsys.config.settings import Settings
from recsys.db import connect, fetch_all, fetch_value, with_database

NIGHT = dt.date(2026, 10, 1)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop") / "shop"
    generate_data(users=3000, days=30, seed=3, out=out, end_date=NIGHT)
    return out


def _truth(shop: Path) -> GroundTruth:
    return GroundTruth.load(truth_path_for(shop))


def _offers(truth: GroundTruth, actions: np.ndarray | None = None) -> sim.SentOffers:
    ids = truth.user_ids[truth.consent.any(axis=1)]
    if actions is None:
        actions = truth.oracle_actions(ids, night=NIGHT)
    send = sim.epoch(NIGHT) + 9 * 3600
    return sim.SentOffers(np.arange(1, len(ids) + 1), ids, np.asarray(actions), np.full(len(ids), send))


# --- simulated users ----------------------------------------------------------------------------------


def test_responses_follow_the_truth_and_unsubscribes_revoke_consent(shop: Path) -> None:
    truth = _truth(shop)
    offers = _offers(truth)
    k = np.zeros(len(offers))
    before = truth.consent.copy()
    p = truth.response(truth.index_of(offers.user_id), offers.action_id, night=NIGHT, offers_last_7d=k)
    r = sim.SimulatedUsers(truth, seed=1).respond(NIGHT, offers, k)

    assert (r.clicked <= r.opened).all() and (r.converted <= r.clicked).all()
    assert not (r.unsubscribed & r.clicked).any()
    assert ((r.revenue_cents > 0) == r.converted).all()
    assert (r.open_at >= offers.sent_at).all() and (r.buy_at >= r.click_at).all()
    # the open rate is the truth's, within four standard errors
    expected, n = float(p.p_open.mean()), len(offers)
    assert abs(r.opened.mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / n)
    # unsubscribes revoke exactly the offer's channel, for exactly those users
    revoked = before & ~truth.consent
    rows, chans = np.nonzero(revoked)
    unsub_idx = r.idx[r.unsubscribed]
    assert r.unsubscribed.sum() > 0
    assert sorted(rows.tolist()) == sorted(unsub_idx.tolist())
    assert (
        truth.action_channel[offers.action_id[r.unsubscribed]]
        == chans[np.argsort(rows)][np.argsort(np.argsort(unsub_idx))]
    ).all()


def test_same_seed_same_responses(shop: Path) -> None:
    a = sim.SimulatedUsers(_truth(shop), seed=5).respond(NIGHT, _offers(_truth(shop)), np.zeros(1))
    b = sim.SimulatedUsers(_truth(shop), seed=5).respond(NIGHT, _offers(_truth(shop)), np.zeros(1))
    assert (a.converted == b.converted).all() and (a.revenue_cents == b.revenue_cents).all()


def test_the_days_behaviour_loads_through_the_normal_loader_with_its_dates(
    shop: Path, settings: Settings, db: object
) -> None:
    from recsys.data.extract import extract_path

    truth = _truth(shop)
    offers = _offers(truth)
    users = sim.SimulatedUsers(truth, seed=2)
    responses = users.respond(NIGHT, offers, np.zeros(len(offers)))
    # one conversion late in the evening, so its purchase lands after midnight
    late = int(np.flatnonzero(responses.converted)[0])
    responses.click_at[late] = sim.epoch(NIGHT) + 23 * 3600 + 59 * 60
    responses.buy_at[late] = responses.click_at[late] + 30 * 60
    buys = users.live_day(NIGHT, responses)
    first = settings.inbox / "events_sim_1.csv"
    settings.inbox.mkdir(parents=True)
    written = users.write_events(first, sim.epoch(NIGHT) + sim.DAY)
    assert written > 0 and first.exists()

    midnight = dt.datetime.combine(NIGHT + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    (result,) = extract_path(db, settings, first, reference_at=midnight)
    assert result.status == "loaded", result.describe()
    assert result.total("rejected") == 0
    rows = fetch_all(
        db,
        "select min(event_at) as lo, max(event_at) as hi, count(*) filter (where action = 'purchase') as buys,"
        " count(*) as n from recsys.behavior_events",
    )[0]
    assert rows["n"] == written
    assert rows["lo"] >= dt.datetime.combine(NIGHT, dt.time(), tzinfo=dt.UTC) and rows["hi"] < midnight
    # every offer conversion of the day is a purchase of its revenue, on the offer's channel
    converted = responses.converted.copy()
    converted[late] = False
    for i in np.flatnonzero(converted)[:20]:
        amount = fetch_value(
            db,
            "select amount from recsys.behavior_events where user_id = %s and action = 'purchase'"
            " and event_at = to_timestamp(%s)",
            (int(offers.user_id[i]), int(responses.buy_at[i])),
        )
        assert amount is not None and round(float(amount) * 100) == responses.revenue_cents[i]
    assert len(buys["user_id"]) == rows["buys"]
    # the purchase after midnight waits for the next night's file
    second = settings.inbox / "events_sim_2.csv"
    assert users.write_events(second, sim.epoch(NIGHT) + 2 * sim.DAY) >= 1
    text = second.read_text()
    assert f"{NIGHT + dt.timedelta(days=1)}T00:" in text and ",purchase," in text


# --- valuation ------------------------------------------------------------------------------------------


def test_values_put_the_oracle_on_top_and_intervals_around_the_mean(shop: Path) -> None:
    truth = _truth(shop)
    catalog = load_catalog()
    offers = _offers(truth)
    ok = truth.consent[truth.index_of(offers.user_id)]
    k = np.zeros(len(offers))
    values, fixed = sim.value_users(truth, catalog, NIGHT, offers.user_id, offers.action_id, ok, k)
    iv = {name: sim.Interval.of(v) for name, v in values.items()}
    assert iv["oracle"].mean >= iv["best_fixed"].mean > iv["random"].mean
    # per user too, where the fixed offer can be sent at all (elsewhere it sends nothing, worth 0)
    sendable = values["best_fixed"] != 0
    assert (values["oracle"][sendable] >= values["best_fixed"][sendable] - 1e-12).all()
    # the oracle's own actions are worth the oracle (up to users whose every allowed offer loses money)
    assert np.isclose(iv["policy"].mean, iv["oracle"].mean, rtol=0.01)
    # the fixed offer is the best single column
    alt = sim.value_users(truth, catalog, NIGHT, offers.user_id, np.full(len(offers), fixed), ok, k)[0]["policy"]
    assert np.isclose(alt.mean(), iv["best_fixed"].mean)
    x = values["random"]
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert np.isclose(iv["random"].upper - iv["random"].mean, half)
    assert iv["random"].lower < iv["random"].mean < iv["random"].upper


def test_table_csv_json_and_png(tmp_path: Path) -> None:
    rows = []
    rng = np.random.default_rng(0)
    for i in range(3):
        per = {name: rng.normal(0.05 * (j + 1), 0.1, 200) for j, name in enumerate(sim.VALUE_ROWS[:-1])}
        rows.append(
            sim.NightValues(
                night=i + 1,
                campaign_date=NIGHT + dt.timedelta(days=i),
                treated=200,
                holdout=10,
                values={**{k: sim.Interval.of(v) for k, v in per.items()}, "control": sim.Interval(0, 0, 0, 10)},
                policy_minus_fixed=sim.Interval.of(per["policy"] - per["best_fixed"]),
                fixed_action="discount 10% via email",
                outcomes={"sent": 200, "converted": 3},
            )
        )
    config = sim.SimulateConfig(nights=3, out=tmp_path)
    paths = sim.save_results(rows, tmp_path, config)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(paths["json"].read_text())
    assert len(data["nights"]) == 3 and data["config"]["nights"] == 3
    lines = paths["csv"].read_text().splitlines()
    assert len(lines) == 4 and "policy_lower" in lines[0] and "best_fixed_upper" in lines[0]
    table = sim.format_table(rows)
    assert len(table.splitlines()) == 4 and "policy - fixed" in table


def test_outcomes_after_the_wall_clock_wait_and_the_rest_are_recorded(db) -> None:
    """The last simulated night lies yesterday: its later outcomes would be refused by the protocol
    as future events; they are left out, the others recorded."""
    import sender_support as s

    s.reset(db)
    s.add_users(db, 1, 1)
    today = dt.datetime.now(dt.UTC).date()
    s.add_run(db, "sim-night", today)
    (offer,) = s.add_offers(db, "sim-night", today, 1, 1, due_in=dt.timedelta(hours=-2))
    with db.cursor() as cur:  # the simulated sender marks offers sent at their scheduled time
        cur.execute(
            "update recsys.campaign_offers set status = 'sent', attempts = 1, sent_at = scheduled_at "
            "where offer_id = %s",
            (offer,),
        )
    db.commit()
    now = dt.datetime.now(dt.UTC)

    times = [now - dt.timedelta(hours=1), now + dt.timedelta(hours=3)]

    class Outcomes:
        def offer_events(self) -> tuple[list[int], list[str], list[dt.datetime], list[float | None]]:
            return [offer, offer], ["delivered", "opened"], times, [None, None]

    assert sim.record_responses(db, Outcomes()) == 1  # type: ignore[arg-type]
    db.commit()
    assert fetch_all(db, "select event from recsys.offer_events where offer_id = %s", (offer,)) == [
        {"event": "delivered"}
    ]


def test_bad_arguments_are_one_line_errors(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(sim.RecsysError, match="--nights must be a whole number >= 1"):
        sim.simulate(sim.SimulateConfig(nights=0, out=tmp_path), settings, echo=False)
    with pytest.raises(sim.RecsysError, match="must start with recsys_sim"):
        sim.simulate(sim.SimulateConfig(database="postgres", out=tmp_path), settings, echo=False)
    assert not any(tmp_path.iterdir())


# --- whole simulations --------------------------------------------------------------------------------


def _run(settings: Settings, tmp_path: Path, *, in_process: bool, nights: int = 2) -> sim.SimulationResult:
    config = sim.SimulateConfig(
        nights=nights,
        users=1500,
        seed=4,
        start=dt.date(2026, 9, 1),
        out=tmp_path / "sim",
        timesteps=4096,
        history_days=30,
        in_process=in_process,
        # one per test and per test session: parallel sessions on one server must not drop each other's
        database=f"recsys_sim_test_{os.getpid()}_{tmp_path.name[-12:].lower().replace('-', '_')}",
    )
    return sim.simulate(config, settings, echo=False)


def _drop(settings: Settings, name: str) -> None:
    import psycopg2
    from psycopg2 import sql

    admin = psycopg2.connect(settings.database_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
    admin.close()


@pytest.mark.slow
def test_two_nights_close_the_feedback_loop(settings: Settings, tmp_path: Path) -> None:
    result = _run(settings, tmp_path, in_process=True)
    url = with_database(settings.database_url, result.config.database)
    try:
        first, second = (n.campaign_date for n in result.nights)
        # the table: one row per night, every value with its interval
        assert [n.night for n in result.nights] == [1, 2]
        for n in result.nights:
            assert n.treated > 0 and n.holdout > 0
            for name in ("policy", "best_fixed", "random", "oracle"):
                v = n.values[name]
                assert v.n == n.treated and v.lower <= v.mean <= v.upper
        lines = result.paths["csv"].read_text().splitlines()
        assert len(lines) == 3
        # the fixed cohort: the users with features on night 1, each valued on both nights (no offer: 0)
        values = result.cohort
        assert values is not None and result.cohort_summary is not None
        users = result.cohort_summary["users"]
        assert users >= result.nights[0].treated + result.nights[0].holdout
        assert values.values["policy"].shape == (2, users)
        assert (values.values["policy"] != 0).sum(axis=1)[0] <= result.nights[0].treated
        assert "cohort_policy" in lines[0].split(",") and "cohort_fixed_cadence" in lines[0].split(",")
        saved = json.loads(result.paths["json"].read_text())["cohort"]
        assert saved["range"] == [1, 2] and set(saved["values"]) == set(sim.cohort.COHORT_ROWS)
        assert saved["bar"]["lower"] <= saved["bar"]["mean"] and 1 <= saved["fixed_cadence"] <= 7
        assert result.paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with connect(url) as conn:
            # every offer sent on night 1 was delivered, and the users responded to some
            sent = fetch_value(
                conn,
                "select count(*) from recsys.campaign_offers where campaign_date = %s and status = 'sent'",
                (first,),
            )
            events = dict(
                (r["event"], r["n"])
                for r in fetch_all(
                    conn,
                    "select e.event, count(*) as n from recsys.offer_events as e join recsys.campaign_offers as o"
                    " using (offer_id) where o.campaign_date = %s group by e.event",
                    (first,),
                )
            )
            assert sent == result.nights[0].treated == events["delivered"]
            assert events.get("opened", 0) > 0 and events.get("clicked", 0) > 0
            # clicks came back as sessions brought by the offer's channel, loaded for night 2 with their dates
            clicks = fetch_all(
                conn,
                "select o.user_id, o.channel, e.event_at from recsys.offer_events as e"
                " join recsys.campaign_offers as o using (offer_id) where o.campaign_date = %s and e.event = 'clicked'",
                (first,),
            )
            for c in clicks:
                assert fetch_value(
                    conn,
                    "select count(*) from recsys.behavior_events where user_id = %s and channel = %s"
                    " and event_at = %s and action = 'view'",
                    (c["user_id"], c["channel"], c["event_at"]),
                ), c
            day = fetch_all(
                conn,
                "select count(*) filter (where action = 'purchase') as buys, count(*) as n from recsys.behavior_events"
                " where event_at >= %s and event_at < %s",
                (first, second),
            )[0]
            assert day["n"] > 0 and day["buys"] > 0
            # the night-2 model learned from the logs up to night 1, own offers included
            window_end = fetch_value(
                conn, "select training_window_end from recsys.policy_models where trained_on = %s", (second,)
            )
            assert window_end == first
            logged = fetch_value(
                conn,
                "select count(*) from recsys.v_logged_offers where features_as_of = %s and decision = 'offer'",
                (first,),
            )
            assert logged == sent
            # ... and the night's rests, with reward 0, for off-policy evaluation (never for the fit)
            rests = fetch_all(
                conn,
                "select count(*) as n, count(*) filter (where opened or converted or revenue > 0) as answered"
                " from recsys.v_logged_offers where features_as_of = %s and decision = 'rest'",
                (first,),
            )[0]
            rested = fetch_value(
                conn,
                "select count(*) from recsys.campaign_decisions where campaign_date = %s and decision = 'rest'",
                (first,),
            )
            assert rests["n"] == rested and rests["answered"] == 0
            # ... with their unsubscribe outcomes: the unsubscribe head learned from the opened own offers
            # (the input history has no unsubscribe outcome), positives only where one was recorded
            head = fetch_value(
                conn,
                "select response_model->'fit_report'->'heads'->'unsubscribe' from recsys.policy_models"
                " where trained_on = %s",
                (second,),
            )
            opened, unsubscribed = fetch_all(
                conn,
                "select count(*) filter (where opened) as o, count(*) filter (where unsubscribed) as u"
                " from recsys.v_logged_offers where features_as_of = %s",
                (first,),
            )[0].values()
            assert head["fitted"] is True and 0 < head["rows"] <= opened
            assert head["positives"] <= unsubscribed
    finally:
        _drop(settings, result.config.database)


@pytest.mark.slow
def test_one_night_through_the_nightly_dag(settings: Settings, tmp_path: Path) -> None:
    result = _run(settings, tmp_path, in_process=False, nights=1)
    url = with_database(settings.database_url, result.config.database)
    try:
        (night,) = result.nights
        assert night.treated > 0 and night.model_version
        with connect(url) as conn:
            run = fetch_all(
                conn, "select state, report from recsys.campaign_runs where campaign_date = %s", (night.campaign_date,)
            )
        assert [r["state"] for r in run] == ["published"]
        assert "seconds_per_task" in run[0]["report"]  # written by the DAG's report task
        assert (tmp_path / "sim" / "airflow" / "airflow.db").exists()
    finally:
        _drop(settings, result.config.database)
