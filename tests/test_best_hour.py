"""The best_hour timing (issue 13, send time is a decision): the catalog and rules that turn it on,
its schedule in `recsys.offer_schedule` (zones, DST, quiet hours, validity), the hour each user gets
(`recsys.best_send_time`), and scoring and publishing a run that uses it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from test_campaign_scoring import DAY, _register, add_users, artifact, campaign, offers, publish  # noqa: F401

from recsys.benchmark.toy import toy_ppo_artifact
from recsys.campaign import load_rules
from recsys.config import load_config
from recsys.config.catalog import BEST_HOUR, action_mapping, load_catalog
from recsys.config.settings import PROJECT_ROOT
from recsys.db import connect, fetch_value
from recsys.errors import ConfigError, GenerateError

Z = dt.UTC
QUIET = (dt.time(21, 0), dt.time(8, 0))
EARLY = dt.datetime(2000, 1, 1, tzinfo=Z)


def _at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=Z)


def _config_with(tmp_path: Path, old: str, new: str) -> Path:
    text = (PROJECT_ROOT / "recsys" / "config.toml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "config.toml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


TIMINGS = 'timings = ["immediate", "delay_1hour", "delay_6hours"]'


def test_best_hour_is_off_by_default_and_listing_it_adds_36_offers_old_models_still_map(tmp_path: Path) -> None:
    seed = load_catalog()
    assert BEST_HOUR not in seed.timings and seed.n_offers == 108
    grown = load_catalog(_config_with(tmp_path, TIMINGS, TIMINGS.replace('"]', '", "best_hour"]')))
    assert grown.n_offers == 144 and grown.timing_delay_minutes[BEST_HOUR] == 0
    best = [a for a in grown.actions if a.timing == BEST_HOUR]
    assert len(best) == 36
    assert best[0].describe("percent_off") == "5% discount via email (at the user's best hour)"
    # a model trained on the seed's offers scores on the grown catalog: each action found by what it is
    trained = [{"offer_type": a.offer_type, "value": a.value, "channel": a.channel, "timing": a.timing}
               for a in seed.without_rest().actions]  # fmt: skip
    mapped = action_mapping(trained, grown)
    assert [grown.actions[i].key for i in mapped] == [a.key for a in seed.without_rest().actions]
    assert not any(grown.actions[i].timing == BEST_HOUR for i in mapped)


def test_best_hour_rules_are_read_and_checked(tmp_path: Path) -> None:
    rules = load_rules()
    assert (rules.best_hour_default, rules.best_hour_min_certainty) == (dt.time(9), 1.0)
    assert rules.as_json()["best_hour_default"] == "09:00"
    path = _config_with(tmp_path, 'best_hour_default = "09:00"', 'best_hour_default = "9 am"')
    with pytest.raises(ConfigError, match=r"\[campaign\] best_hour_default must be a time"):
        load_config(path)
    path = _config_with(tmp_path, "best_hour_min_certainty = 1.0", "best_hour_min_certainty = -1")
    with pytest.raises(ConfigError, match=r"\[campaign\] best_hour_min_certainty must be a number >= 0"):
        load_config(path)


BEST_CASES = [
    # (campaign date, zone, best local time, publish at, quiet window, validity hours, expected UTC)
    # the nightly 02:00 UTC publish: a 07:00 UTC reader gets 07:00 the same day
    pytest.param(DAY, "UTC", dt.time(7), _at(2026, 6, 10, 2), None, 24, _at(2026, 6, 10, 7), id="utc-morning"),
    # 01:00 has passed at 02:00: the next occurrence, tomorrow 01:00
    pytest.param(DAY, "UTC", dt.time(1), _at(2026, 6, 10, 2), None, 24, _at(2026, 6, 11, 1), id="utc-passed"),
    # ... unless the validity does not reach it: then at the start (the publish moment)
    pytest.param(DAY, "UTC", dt.time(1), _at(2026, 6, 10, 2), None, 6, _at(2026, 6, 10, 2), id="validity"),
    # Tokyo at 02:00 UTC is 11:00: 21:00 JST the same day; 08:00 JST only the next day
    pytest.param(DAY, "Asia/Tokyo", dt.time(21), _at(2026, 6, 10, 2), None, 24, _at(2026, 6, 10, 12), id="tokyo-eve"),
    pytest.param(DAY, "Asia/Tokyo", dt.time(8), _at(2026, 6, 10, 2), None, 24, _at(2026, 6, 10, 23), id="tokyo-next"),
    # Los Angeles at 02:00 UTC is still the day before: the campaign date's 19:00 PDT, not the eve's
    pytest.param(
        DAY, "America/Los_Angeles", dt.time(19), _at(2026, 6, 10, 2), None, 24, _at(2026, 6, 11, 2), id="la-date"
    ),
    # published before the date: its first occurrence on the date
    pytest.param(DAY, "Europe/Berlin", dt.time(6), EARLY, None, 24, _at(2026, 6, 10, 4), id="berlin-early"),
    # quiet hours: a 22:00 reader of sms gets 08:00 the next morning; 06:00 moves to 08:00
    pytest.param(DAY, "UTC", dt.time(22), _at(2026, 6, 10, 2), QUIET, 24, _at(2026, 6, 11, 8), id="quiet-evening"),
    pytest.param(DAY, "UTC", dt.time(6), EARLY, QUIET, 24, _at(2026, 6, 10, 8), id="quiet-morning"),
    # DST change days: the hour in the day's own offset; a time in the spring-forward gap moves past it
    pytest.param(
        dt.date(2026, 3, 8), "America/Los_Angeles", dt.time(10), EARLY, None, 24, _at(2026, 3, 8, 17), id="us-dst"
    ),
    pytest.param(
        dt.date(2026, 3, 8), "America/Los_Angeles", dt.time(2, 30), EARLY, None, 24, _at(2026, 3, 8, 10, 30), id="gap"
    ),
    pytest.param(
        dt.date(2026, 10, 25), "Europe/Berlin", dt.time(10), EARLY, None, 24, _at(2026, 10, 25, 9), id="eu-std"
    ),
    # the repeated hour of the autumn change: the later (standard time) reading
    pytest.param(
        dt.date(2026, 10, 25), "Europe/Berlin", dt.time(2, 30), EARLY, None, 24, _at(2026, 10, 25, 1, 30), id="fold"
    ),
    # published on the change night after the hour: the next day's hour in its own offset
    pytest.param(
        dt.date(2026, 3, 28),
        "Europe/Berlin",
        dt.time(7),
        _at(2026, 3, 28, 7),
        None,
        24,
        _at(2026, 3, 29, 5),
        id="eu-dst-next",
    ),
]


@pytest.mark.parametrize(("day", "tz", "best", "publish_at", "quiet", "validity", "expected"), BEST_CASES)
def test_best_hour_schedule(migrated_url: str, day, tz, best, publish_at, quiet, validity, expected) -> None:
    start, end = quiet or (None, None)
    with connect(migrated_url) as conn:
        got = fetch_value(
            conn,
            "select scheduled_at from recsys.offer_schedule(%s, %s, %s, %s, 0, %s, %s, true, %s)",
            (day, tz, best, publish_at, start, end, validity),
        )
    assert got == expected
    assert got >= publish_at  # never before the publish moment


def test_a_delay_counts_from_the_best_hour(migrated_url: str) -> None:
    with connect(migrated_url) as conn:
        got = fetch_value(
            conn,
            "select scheduled_at from recsys.offer_schedule(%s, 'UTC', '07:00', %s, 30, null, null, true, 24)",
            (DAY, _at(2026, 6, 10, 2)),
        )
    assert got == _at(2026, 6, 10, 7, 30)


@pytest.mark.parametrize(
    ("hour", "certainty", "expected"),
    [
        (7.4, 5.0, dt.time(7)),
        (7.5, 2.0, dt.time(8)),  # at the threshold: the learned hour
        (23.6, 9.0, dt.time(0)),  # rounds across midnight
        (13.0, 1.99, dt.time(10)),  # too uncertain: the default
        (None, None, dt.time(10)),  # no hour learned
        (13.0, None, dt.time(10)),
    ],
)
def test_best_send_time_uses_the_learned_hour_only_when_certain(migrated_url: str, hour, certainty, expected) -> None:
    with connect(migrated_url) as conn:
        got = fetch_value(conn, "select recsys.best_send_time(%s, %s, 2.0, '10:00')", (hour, certainty))
    assert got == expected


def test_a_run_with_best_hour_schedules_each_user_at_their_hour_and_publish_moves_passed_ones(campaign) -> None:  # noqa: F811
    conn, settings = campaign
    catalog = dataclasses.replace(
        load_catalog(), timings=(BEST_HOUR,), timing_delay_minutes={BEST_HOUR: 0}, rest_action=False
    )
    with connect(conn.dsn) as own:
        _register(own, "best", toy_ppo_artifact(catalog, seed=5), catalog)
    email = {"sms": False, "push": False}
    # user: (zone, channels, learned hour, certainty)
    people = {
        1: ("UTC", email, 7.4, 5.0),  # 07:00
        2: ("Asia/Tokyo", email, 20.6, 5.0),  # 21:00 JST
        3: ("America/Los_Angeles", email, 13.0, 0.5),  # uncertain: the default 10:00
        4: ("Asia/Tokyo", email, None, None),  # no hour: 10:00 JST, passed at publish -> next day
        5: ("UTC", email, 1.0, 5.0),  # 01:00 passed at 02:00: the next day
        6: ("UTC", {"email": False, "push": False}, 22.0, 5.0),  # sms at 22:00: quiet -> 08:00 next day
    }
    add_users(conn, DAY, [{"user_id": u, "timezone": tz, **ch} for u, (tz, ch, _, _) in people.items()])
    with conn.cursor() as cur:
        for u, (_, _, hour, certainty) in people.items():
            cur.execute(
                "update recsys.user_features set preferred_local_hour = %s, preferred_hour_certainty = %s "
                "where as_of = %s and user_id = %s",
                (hour, certainty, DAY, u),
            )
    rules = dataclasses.replace(load_rules(), holdout_share=0.0, exploration_share=0.0, best_hour_default=dt.time(10))
    config = dataclasses.replace(load_config(settings.config), rules=rules, catalog=catalog)
    from recsys.campaign import score_campaign

    scored_at = _at(2026, 6, 10, 2)
    with connect(conn.dsn) as own:
        score_campaign(own, settings, DAY, config=config, run_id="bh", shard=0, shards=1,
                       model_version="best", publish_at=scored_at)  # fmt: skip
    expected = {
        1: _at(2026, 6, 10, 7),
        2: _at(2026, 6, 10, 12),
        3: _at(2026, 6, 10, 17),
        4: _at(2026, 6, 11, 1),
        5: _at(2026, 6, 11, 1),
        6: _at(2026, 6, 11, 8),
    }
    rows = offers(conn)
    assert {r["user_id"]: r["scheduled_at"] for r in rows} == expected
    assert {r["timing"] for r in rows} == {BEST_HOUR}
    assert all(r["expires_at"] - r["scheduled_at"] == dt.timedelta(hours=24) for r in rows)
    # published at 08:00 UTC: user 1's 07:00 has passed (tomorrow 07:00); the others stand
    result = publish(settings, "bh", published_at=_at(2026, 6, 10, 8))
    assert result["retimed"] == 1
    after = {r["user_id"]: r["scheduled_at"] for r in offers(conn)}
    assert after == {**expected, 1: _at(2026, 6, 11, 7)}
    assert np.all([r["expires_at"] - r["scheduled_at"] == dt.timedelta(hours=24) for r in offers(conn)])


# --- the synthetic shop: a best_hour send valued at its hour, and a weaker session-hour link ----------


def test_the_generator_sends_and_values_best_hour_offers_at_the_users_best_hour(tmp_path: Path) -> None:
    import csv
    from zoneinfo import ZoneInfo

    from recsys.benchmark.synth.generate import generate_data
    from recsys.benchmark.synth.params import TIMEZONES
    from recsys.benchmark.synth.truth import GroundTruth

    catalog = dataclasses.replace(
        load_catalog(), timings=("immediate", BEST_HOUR), timing_delay_minutes={"immediate": 0, BEST_HOUR: 0}
    )
    summary = generate_data(users=600, days=10, seed=3, out=tmp_path / "d", end_date=DAY, catalog=catalog)
    truth = GroundTruth.load(summary.truth_path)
    with open(tmp_path / "d" / "offers.csv", newline="", encoding="utf-8") as f:
        sent = [r for r in csv.DictReader(f) if r["timing"] == BEST_HOUR]
    assert len(sent) > 50
    for r in sent:  # sent at the user's best local hour, on the hour
        i = truth.index_of(np.array([int(r["user_id"])]))[0]
        local = dt.datetime.fromisoformat(r["sent_at"]).astimezone(ZoneInfo(TIMEZONES[truth.timezone[i]]))
        assert (local.hour, local.minute) == (int(truth.best_send_hour[i]), 0)
    # valued at that hour: a best_hour offer is the immediate offer sent at the best hour
    idx = np.arange(200)
    best = np.array([a.action_id for a in truth.catalog.actions if a.timing == BEST_HOUR])
    now = best - 1  # the same offer, immediate (timings are innermost)
    assert all(truth.catalog.actions[a].timing == "immediate" for a in now)
    penalty = truth.params.unsubscribe_penalty
    hours = truth.best_send_hour[idx][:, None]
    at_best = truth.response(idx[:, None], best[None, :], night=DAY).expected_value(penalty)
    moved = truth.response(idx[:, None], now[None, :], night=DAY, send_hour=hours).expected_value(penalty)
    assert np.allclose(at_best, moved)
    assert not np.allclose(at_best, truth.response(idx[:, None], now[None, :], night=DAY).expected_value(penalty))
    # and the value matrix agrees with the per-offer response
    matrix = truth.value_matrix(truth.user_ids[idx], night=DAY, respect_consent=False)
    assert np.allclose(matrix[:, best], at_best)


def test_a_share_of_users_can_read_at_another_hour_than_their_sessions_start(tmp_path: Path) -> None:
    from recsys.benchmark.synth.generate import generate_data
    from recsys.benchmark.synth.truth import GroundTruth

    strong = GroundTruth.load(generate_data(users=2000, days=2, seed=4, out=tmp_path / "s", end_date=DAY).truth_path)
    assert np.array_equal(strong.session_hour(), strong.traits.preferred_hour)
    assert "session_hour_decoupled_share" not in strong.params.to_json()  # the seed's truth files keep their bytes
    summary = generate_data(
        users=2000, days=2, seed=4, out=tmp_path / "w", end_date=DAY, session_hour_decoupled_share=0.3
    )
    weak = GroundTruth.load(summary.truth_path)
    assert weak.params.session_hour_decoupled_share == 0.3
    shift = np.mod(weak.session_hour() - weak.traits.preferred_hour, 24.0)
    moved = ~np.isclose(shift, 0.0)
    assert np.allclose(shift[moved], weak.params.session_hour_decoupled_shift)
    assert 0.25 < moved.mean() < 0.35
    # the same draw every time the truth is loaded
    assert np.array_equal(GroundTruth.load(summary.truth_path).session_hour(), weak.session_hour())
    with pytest.raises(GenerateError, match="session_hour_decoupled_share must be in"):
        generate_data(users=10, days=2, seed=4, out=tmp_path / "x", end_date=DAY, session_hour_decoupled_share=1.5)
