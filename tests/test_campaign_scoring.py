"""Campaign scoring end to end on a real PostgreSQL: eligibility, masks, holdout, exploration,
idempotent re-runs, a failure mid-write, shards and publishing, message filling, the CLI."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from psycopg2 import sql
from psycopg2.extras import execute_values

import recsys.campaign.write as write_module
from recsys.benchmark.toy import toy_ppo_artifact, toy_record
from recsys.campaign import CampaignRules, load_rules, publish_run, score_campaign
from recsys.campaign.load import load_users
from recsys.campaign.score import choose_actions
from recsys.cli import main
from recsys.config import load_config
from recsys.config.catalog import load_catalog
from recsys.config.features import PRIOR_SHRUNK_FEATURES
from recsys.config.settings import Settings
from recsys.data.features import partition_name
from recsys.db import Connection, connect, database_url, fetch_all, fetch_value
from recsys.errors import RecsysError
from recsys.evaluation.registry import record_decision, register

DAY = dt.date(2026, 6, 10)
FEATURE_COLUMNS = (
    "recency_days, frequency_sessions, monetary_value, engagement_score, discount_sensitivity, "
    "free_shipping_preference, email_responsiveness, sms_responsiveness, push_responsiveness, "
    "days_since_last_purchase, purchase_count, offers_last_7d, days_since_last_offer, top_category, "
    "r_score, f_score, m_score, segment, " + ", ".join(name for name, _, _ in PRIOR_SHRUNK_FEATURES)
)


def score(settings: Settings, day: dt.date, *, rules: CampaignRules | None = None, **kwargs: Any) -> dict[str, Any]:
    """`score_campaign` on a connection of its own, as the CLI and the DAG call it; `rules`
    replaces the configured campaign rules."""
    config = load_config(settings.config)
    if rules is not None:
        config = dataclasses.replace(config, rules=rules)
    with connect(database_url(settings)) as conn:
        return score_campaign(conn, settings, day, config=config, **kwargs)


def publish(settings: Settings, run_id: str, **kwargs: Any) -> dict[str, Any]:
    """`publish_run` on a connection of its own, committed."""
    with connect(database_url(settings)) as conn:
        return publish_run(conn, settings, run_id, **kwargs)


@pytest.fixture(scope="module")
def artifact() -> bytes:
    return toy_ppo_artifact(load_catalog(), seed=5)


def register_model(conn: Connection, version: str, artifact: bytes) -> None:
    """Register the model and crown it, in a transaction of its own."""
    catalog = load_catalog()
    with connect(conn.dsn) as own:
        _register(own, version, artifact, catalog)


def _register(conn: Connection, version: str, artifact: bytes, catalog) -> None:
    register(conn, toy_record(catalog, version, artifact, seed=5, trained_on=DAY, total_timesteps=64))
    record_decision(conn, version, decision="bootstrap", reasons=[], evaluation={})


def add_users(conn: Connection, day: dt.date, users: list[dict]) -> None:
    """users and user_features rows for `day`: each dict may set consent, addresses, tz, name, recency."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("create table if not exists recsys.{} partition of recsys.user_features for values in (%s)").format(
                sql.Identifier(partition_name(day))
            ),
            (day,),
        )
        execute_values(
            cur,
            "insert into recsys.users (user_id, email_opt_in, sms_opt_in, push_opt_in, email, phone, push_token, "
            "timezone, first_name, load_id) values %s on conflict (user_id) do nothing",
            [
                (
                    u["user_id"],
                    u.get("email", True),
                    u.get("sms", True),
                    u.get("push", True),
                    u.get("email_address", f"u{u['user_id']}@example.com"),
                    u.get("phone", "+15550000000"),
                    u.get("push_token", f"tok{u['user_id']}"),
                    u.get("timezone", "UTC"),
                    u.get("first_name", "Ann"),
                    1,
                )
                for u in users
                if u.get("has_user_row", True)
            ],
        )
        rng = np.random.default_rng(len(users))
        execute_values(
            cur,
            f"insert into recsys.user_features (as_of, user_id, {FEATURE_COLUMNS}) values %s",  # noqa: S608
            [
                (
                    day,
                    u["user_id"],
                    u.get("recency", 3.0),
                    5,
                    100.0,
                    *rng.random(6).round(3).tolist(),
                    30.0,
                    2,
                    0,
                    365.0,
                    u.get("category", "books"),
                    3,
                    3,
                    3,
                    "loyal",
                    *rng.random(len(PRIOR_SHRUNK_FEATURES)).round(3).tolist(),
                )
                for u in users
            ],
        )
    conn.commit()


@pytest.fixture
def campaign(migrated_url: str, artifact: bytes, settings):
    """An emptied database with one champion model; yields (connection, settings)."""
    # autocommit: the test's own reads must not hold locks that the runs' partition DDL waits for
    with connect(migrated_url, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "truncate recsys.campaign_offers, recsys.campaign_holdout, recsys.campaign_decisions, "
                "recsys.campaign_run_shards, "
                "recsys.campaign_runs, recsys.offer_events, recsys.offer_history, recsys.users, "
                "recsys.user_features, recsys.behavior_events, recsys.policy_models, "
                "recsys.address_suppressions cascade"
            )
        register_model(conn, "m1", artifact)
        yield conn, settings


def _population(n: int = 300, start: int = 1) -> list[dict]:
    users = []
    for i in range(start, start + n):
        u: dict = {"user_id": i}
        if i % 10 == 0:  # no consent anywhere
            u.update(email=False, sms=False, push=False)
        elif i % 10 == 1:  # sms consent without a phone, email only
            u.update(sms=True, phone=None, push=False)
        elif i % 10 == 2:  # inactive
            u.update(recency=200.0)
        elif i % 10 == 3:
            u.update(has_user_row=False)
        elif i % 10 == 4:
            u.update(email=False, sms=True, push=False)
        users.append(u)
    return users


def offers(conn: Connection, day: dt.date = DAY) -> list[dict]:
    return fetch_all(conn, "select * from recsys.campaign_offers where campaign_date = %s order by user_id", (day,))


def test_one_offer_per_eligible_user_never_on_a_channel_without_consent(campaign) -> None:
    conn, settings = campaign
    add_users(conn, DAY, _population())
    summary = score(settings, DAY, run_id="r1")
    rows = offers(conn)
    holdout = fetch_value(conn, "select count(*) from recsys.campaign_holdout where campaign_date = %s", (DAY,))
    skipped = summary["skipped"]
    assert skipped == {"no_consent": 60, "inactive": 30}  # every 10th without consent or a users row
    assert summary["eligible"] == 210 == len(rows) + holdout
    assert len({r["user_id"] for r in rows}) == len(rows)
    reach = {
        r["user_id"]: r
        for r in fetch_all(
            conn,
            "select user_id, email_opt_in and email is not null as email, sms_opt_in and phone is not null as sms, "
            "push_opt_in and push_token is not null as push from recsys.users",
        )
    }
    assert all(reach[r["user_id"]][r["channel"]] for r in rows)
    assert all(r["user_id"] % 10 not in (0, 2, 3) for r in rows)
    assert all(r["channel"] == "sms" for r in rows if r["user_id"] % 10 == 4)
    assert all(r["channel"] == "email" for r in rows if r["user_id"] % 10 == 1)
    run = fetch_all(conn, "select * from recsys.campaign_runs where run_id = 'r1'")[0]
    assert run["state"] == "published" and run["model_version"] == "m1"
    assert run["counts"]["offers"] == len(rows)
    assert sum(run["counts"]["channel"].values()) == len(rows)
    assert set(run["timings"]) >= {"load", "score", "render", "write"}
    assert all(r["status"] == "scheduled" and r["max_attempts"] == 3 for r in rows)
    # first names are filled in; only an email's unsubscribe link is left for the sender
    assert all(r["body"] and "\u27e6first_name\u27e7" not in r["body"] for r in rows)
    assert all(("\u27e6unsubscribe_url\u27e7" in r["body"]) == (r["channel"] == "email") for r in rows)


def test_a_suppressed_address_is_no_way_to_reach_the_user(campaign) -> None:
    """A hard bounce (recsys.address_suppressions) masks that channel at scoring, like no consent,
    so the policy picks another channel instead of an offer the sender would have to cancel."""
    conn, settings = campaign
    add_users(conn, DAY, _population())
    with conn.cursor() as cur:
        # 11 and 21 reach only email; 5 and 15 every channel. Stored as written, matched normalised.
        cur.execute(
            "insert into recsys.address_suppressions (channel, address, reason, offer_id, user_id, suppressed_at) "
            "select 'email', recsys.normalized_address('email', upper(email)), 'bounced', null, user_id, now() "
            "from recsys.users where user_id in (11, 21, 5, 15)"
        )
    summary = score(settings, DAY, run_id="r1")
    rows = {r["user_id"]: r for r in offers(conn)}
    assert summary["skipped"] == {"no_consent": 62, "inactive": 30}
    assert 11 not in rows and 21 not in rows
    assert all(rows[u]["channel"] != "email" for u in (5, 15) if u in rows)
    assert any(u in rows for u in (5, 15))  # still reached, on another channel


def test_the_load_reaches_a_channel_only_with_consent_an_address_and_no_suppression(campaign) -> None:
    """Each channel's reachability in the campaign load, on every channel: consent, an address, and the
    address (written however the shop wrote it) not suppressed. Suppressions of other channels, or of
    another user's address, do not count."""
    conn, settings = campaign
    add_users(
        conn,
        DAY,
        [
            {"user_id": 1},  # reachable everywhere
            {"user_id": 2, "email_address": "  U2@Example.COM ", "phone": "+1 (555) 000-0002", "push_token": " tk2 "},
            {"user_id": 3, "phone": "+1 555 000 0003"},  # only the phone suppressed
            {"user_id": 4, "email": False, "sms": False, "push": False},  # suppressed and no consent
            {"user_id": 5, "phone": None, "push_token": None},  # no addresses: email only
        ],
    )
    with conn.cursor() as cur:
        execute_values(
            cur,
            "insert into recsys.address_suppressions (channel, address, reason, suppressed_at) "
            "select v.channel, recsys.normalized_address(v.channel, v.address), 'bounced', now() "
            "from (values %s) as v (channel, address)",
            [
                ("email", "u2@example.com"),
                ("sms", "+15550000002"),
                ("push", "tk2"),
                ("sms", "+1-555-000-0003"),
                ("email", "u4@example.com"),
                ("push", "u1@example.com"),  # user 1's email, suppressed as a push token: no effect
            ],
        )
    users = load_users(conn, settings.sql_dir, DAY, load_rules(), 0, 1)
    reach = {
        int(u): tuple(int(users[f"ok_{ch}"][i]) for ch in ("email", "sms", "push"))
        for i, u in enumerate(users.user_ids)
    }
    assert reach == {1: (1, 1, 1), 2: (0, 0, 0), 3: (1, 0, 1), 4: (0, 0, 0), 5: (1, 0, 0)}


def test_frequency_cap_per_channel_cap_and_cooldown_mask_actions(campaign) -> None:
    conn, settings = campaign
    add_users(conn, DAY, [{"user_id": i} for i in range(1, 41)])
    with conn.cursor() as cur:
        # users 1-10: 3 offers in the last 7 days (history and this system's), users 11-20: one sms
        cur.execute(
            "insert into recsys.offer_history (offer_id, user_id, sent_at, offer_type, offer_value, channel, "
            "timing, load_id) select 'h' || u || '-' || k, u, %s::timestamptz - k * interval '1 day', 'discount', "
            "10, 'email', 'immediate', 1 from generate_series(1, 10) as u, generate_series(1, 2) as k",
            (dt.datetime(2026, 6, 10, tzinfo=dt.UTC),),
        )
        cur.execute("select recsys.ensure_campaign_partition(%s)", (DAY - dt.timedelta(days=3),))
        cur.execute(
            "insert into recsys.campaign_offers (run_id, campaign_date, user_id, action_id, offer_type, offer_value,"
            " value_unit, channel, timing, scheduled_at, expires_at, status, body, propensity, is_exploration, "
            "features_as_of) select 'old', %s, u, 0, 'discount', 5, 'percent_off', "
            "case when u <= 10 then 'email' else 'sms' end, 'immediate', now(), now() + interval '1 day', 'sent', "
            "'x', 1, false, %s from generate_series(1, 20) as u",
            (DAY - dt.timedelta(days=3), DAY - dt.timedelta(days=3)),
        )
        # users 21-30: a purchase yesterday; user 31: a purchase 3 days ago (past the 2-day cooldown)
        cur.execute("select recsys.ensure_event_partitions('2026-06-01', '2026-06-30')")
        cur.execute(
            "insert into recsys.behavior_events (event_id, user_id, session_id, event_at, action, amount, load_id) "
            "select 'p' || u, u, 's', %s, 'purchase', 10, 1 from generate_series(21, 30) as u "
            "union all select 'p31', 31, 's', %s, 'purchase', 10, 1",
            (dt.datetime(2026, 6, 9, 12, tzinfo=dt.UTC), dt.datetime(2026, 6, 7, 12, tzinfo=dt.UTC)),
        )
    conn.commit()
    rules = dataclasses.replace(load_rules(), cap_per_channel={"sms": 1}, holdout_share=0.0)
    summary = score(settings, DAY, run_id="caps", rules=rules)
    assert summary["skipped"] == {"frequency_cap": 10, "cooldown": 10}
    rows = {r["user_id"]: r for r in offers(conn)}
    assert set(rows) == set(range(11, 21)) | set(range(31, 41))
    assert all(rows[u]["channel"] != "sms" for u in range(11, 21))


def test_holdout_is_a_stable_share_and_gets_the_greedy_action(campaign) -> None:
    conn, settings = campaign
    from recsys.campaign import hashing

    ids = np.arange(1, 200_001)
    share = (hashing.uniform(ids, "holdout-v1", "holdout") < 0.05).mean()
    assert 0.048 < share < 0.052
    other = hashing.uniform(ids, "holdout-v2", "holdout") < 0.05
    assert (other != (hashing.uniform(ids, "holdout-v1", "holdout") < 0.05)).any()  # a new salt, a new group
    day2 = DAY + dt.timedelta(days=1)
    people = [{"user_id": i} for i in range(1, 401)]
    add_users(conn, DAY, people)
    add_users(conn, day2, people)
    score(settings, DAY, run_id="d1")
    score(settings, day2, run_id="d2")
    query = "select user_id from recsys.campaign_holdout where campaign_date = %s"
    held = [{r["user_id"] for r in fetch_all(conn, query, (d,))} for d in (DAY, day2)]
    assert held[0] == held[1] and 5 <= len(held[0]) <= 40
    expected = {int(u) for u in ids[:400][hashing.uniform(ids[:400], "holdout-v1", "holdout") < 0.05]}
    assert held[0] == expected
    assert not held[0] & {r["user_id"] for r in offers(conn)}


def test_exploration_draws_are_uniform_and_propensities_exact() -> None:
    rules = dataclasses.replace(load_rules(), exploration_share=0.3)
    n, n_actions = 60_000, 108
    mask = np.zeros((n, n_actions), bool)
    mask[:, :36] = True  # one reachable channel: 36 actions
    greedy = np.full(n, 7)
    action, propensity, explored = choose_actions(greedy, mask, np.arange(n), DAY, rules)
    assert mask[np.arange(n), action].all()
    eps, k = 0.3, 36
    assert np.allclose(propensity[action == 7], (1 - eps) + eps / k)
    assert np.allclose(propensity[action != 7], eps / k)
    # the mixture sums to one per user, and the empirical frequencies match the propensities
    assert np.isclose((1 - eps) + eps / k + (k - 1) * eps / k, 1.0)
    assert abs((action == 7).mean() - ((1 - eps) + eps / k)) < 0.01
    freq = np.bincount(action[action != 7], minlength=36)[:36] / n
    assert np.all(np.abs(np.delete(freq, 7) - eps / k) < 0.003)
    assert abs(explored.mean() - eps) < 0.01
    again = choose_actions(greedy, mask, np.arange(n), DAY, rules)
    assert np.array_equal(again[0], action)  # a re-run draws the same


def test_rerun_is_idempotent_keeps_offer_ids_and_never_touches_claimed_or_sent(campaign, artifact) -> None:
    conn, settings = campaign
    add_users(conn, DAY, _population(200))
    score(settings, DAY, run_id="first")
    before = {r["user_id"]: r for r in offers(conn)}
    frozen = sorted(before)[:6]
    with conn.cursor() as cur:
        cur.execute(
            "update recsys.campaign_offers set status = case when user_id = any(%s) then 'claimed' else 'sent' end,"
            " body = 'already sent' where user_id = any(%s) and campaign_date = %s",
            (frozen[:3], frozen, DAY),
        )
    conn.commit()
    register_model(conn, "m2", artifact)  # a new champion does not change tonight's re-run
    score(settings, DAY, run_id="second")
    after = {r["user_id"]: r for r in offers(conn)}
    assert set(after) == set(before)
    for u, row in after.items():
        assert row["offer_id"] == before[u]["offer_id"]
        assert (row["action_id"], row["propensity"], row["is_exploration"]) == (
            before[u]["action_id"],
            before[u]["propensity"],
            before[u]["is_exploration"],
        )
        assert row["model_version"] == "m1"
        if u in frozen:
            assert row["body"] == "already sent" and row["run_id"] == "first"
        else:
            assert row["run_id"] == "second" and row["status"] == "scheduled"
    version = fetch_value(conn, "select model_version from recsys.campaign_runs where run_id = 'second'")
    assert version == "m1"
    score(settings, DAY, run_id="third", model_version="m2")
    assert fetch_value(conn, "select model_version from recsys.campaign_runs where run_id = 'third'") == "m2"


def test_a_run_failing_after_copy_writes_nothing_and_a_rerun_completes(campaign, monkeypatch) -> None:
    conn, settings = campaign
    add_users(conn, DAY, _population(200))

    def boom() -> dt.datetime:
        raise RuntimeError("killed after COPY")

    monkeypatch.setattr(write_module, "_publish_at_scoring", boom)
    with pytest.raises(RuntimeError, match="killed after COPY"):
        score(settings, DAY, run_id="dies")
    assert offers(conn) == []
    assert fetch_value(conn, "select count(*) from recsys.campaign_holdout") == 0
    assert fetch_value(conn, "select state from recsys.campaign_runs where run_id = 'dies'") == "failed"
    monkeypatch.undo()
    summary = score(settings, DAY, run_id="again")
    rows = offers(conn)
    assert len(rows) == summary["offers"] and len({r["user_id"] for r in rows}) == len(rows)
    assert len(rows) + summary["holdout"] == summary["eligible"] == 140


def test_shards_union_equals_the_unsharded_run_and_publish_waits_for_all(campaign) -> None:
    conn, settings = campaign
    add_users(conn, DAY, _population(300))
    score(settings, DAY, run_id="whole")
    whole = {r["user_id"]: (r["offer_id"], r["action_id"], r["propensity"]) for r in offers(conn)}
    for k in (0, 1):
        score(settings, DAY, run_id="sharded", shard=k, shards=3)
    with pytest.raises(RecsysError, match="shard\\(s\\) 2 of 3 are not done"):
        publish(settings, "sharded")
    assert fetch_value(conn, "select state from recsys.campaign_runs where run_id = 'sharded'") == "scoring"
    score(settings, DAY, run_id="sharded", shard=2, shards=3)
    result = publish(settings, "sharded")
    sharded = {r["user_id"]: (r["offer_id"], r["action_id"], r["propensity"]) for r in offers(conn)}
    assert sharded == whole
    per_shard = fetch_all(
        conn, "select shard, (counts->>'offers')::int as n from recsys.campaign_run_shards where run_id = 'sharded'"
    )
    assert sum(r["n"] for r in per_shard) == len(whole) == result["offers"]
    assert all(r["n"] > 0 for r in per_shard)
    assert fetch_value(conn, "select state from recsys.campaign_runs where run_id = 'sharded'") == "published"
    with pytest.raises(RecsysError, match="already published"):
        publish(settings, "sharded")


def test_first_names_are_escaped_in_html_and_fall_back_in_sms(campaign) -> None:
    conn, settings = campaign
    add_users(
        conn,
        DAY,
        [
            {"user_id": 1, "first_name": "<script>alert(1)</script>", "sms": False, "push": False},
            {"user_id": 2, "first_name": None, "sms": False, "push": False},
            {"user_id": 3, "first_name": "Zoë\u4e2d", "email": False, "push": False},
            {"user_id": 4, "first_name": "Bob", "email": False, "push": False, "timezone": "Mars/Olympus"},
        ],
    )
    rules = dataclasses.replace(load_rules(), holdout_share=0.0, exploration_share=0.0)
    summary = score(settings, DAY, run_id="names", rules=rules)
    rows = {r["user_id"]: r for r in offers(conn)}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rows[1]["body"] and "<script>" not in rows[1]["body"]
    assert rows[1]["subject"].startswith("<script>")  # a subject is plain text for the mail client to show
    assert "Hi there," in rows[2]["body"]
    assert rows[3]["channel"] == "sms" and rows[3]["body"].startswith("Hi there!")
    assert rows[4]["body"].startswith("Hi Bob!")
    assert summary["timezone_fallback_utc"] == 1
    assert rows[4]["scheduled_at"] >= dt.datetime(2026, 6, 10, 9, tzinfo=dt.UTC)


def test_template_errors_stop_the_run_before_anything_is_written(campaign, tmp_path) -> None:
    conn, settings = campaign
    add_users(conn, DAY, [{"user_id": 1}])
    rules = load_rules()
    broken = tmp_path / "templates"
    import shutil

    shutil.copytree(rules.templates_dir, broken)
    (broken / "push" / "bundle.body.txt.j2").write_text("Hi {{ first_name }} {{ nope }}")
    with pytest.raises(RecsysError, match=r"template push/bundle.body.txt.j2: UndefinedError: 'nope' is undefined"):
        score(settings, DAY, run_id="t1", rules=dataclasses.replace(rules, templates_dir=broken))
    assert fetch_value(conn, "select count(*) from recsys.campaign_runs") == 0
    assert offers(conn) == []


def test_dry_run_counts_without_writing(campaign) -> None:
    conn, settings = campaign
    add_users(conn, DAY, _population(100))
    summary = score(settings, DAY, run_id="dry", dry_run=True)
    assert summary["offers"] > 0 and offers(conn) == []
    run = fetch_all(conn, "select dry_run, counts from recsys.campaign_runs where run_id = 'dry'")[0]
    assert run["dry_run"] and run["counts"]["offers"] == summary["offers"]
    with pytest.raises(RecsysError, match="dry run"):
        publish(settings, "dry")


def test_missing_features_and_missing_champion_are_clear_errors(campaign) -> None:
    conn, settings = campaign
    with pytest.raises(RecsysError, match="no features as of 2026-06-10: build them first"):
        score(settings, DAY)
    add_users(conn, DAY, [{"user_id": 1}])
    with conn.cursor() as cur:
        cur.execute("update recsys.policy_models set is_champion = false")
    conn.commit()
    with pytest.raises(RecsysError, match="no champion model"):
        score(settings, DAY)


def test_cli_score_shards_and_publish(campaign, monkeypatch, capsys) -> None:
    conn, settings = campaign
    add_users(conn, DAY, _population(60))
    monkeypatch.setenv("RECSYS_DATABASE_URL", settings.database_url)
    assert main(["score", "--campaign-date", "2026-06-10", "--run-id", "c1", "--shard", "0/2"]) == 0
    assert "shard 0/2 done" in capsys.readouterr().out
    assert main(["publish", "--run-id", "c1"]) == 2
    assert "shard(s) 1 of 2 are not done" in capsys.readouterr().err
    assert main(["score", "--campaign-date", "2026-06-10", "--run-id", "c1", "--shard", "1/2"]) == 0
    assert main(["publish", "--run-id", "c1"]) == 0
    out = capsys.readouterr().out
    assert "publish c1:" in out and "offers claimable" in out
    assert main(["score", "--campaign-date", "2026-06-10", "--shard", "1/2"]) == 2
    assert "--shard K/N needs --run-id" in capsys.readouterr().err


def test_scheduled_at_uses_local_send_time_and_publish_retimes_late_releases(campaign) -> None:
    conn, settings = campaign
    future = dt.date.today() + dt.timedelta(days=30)
    people = [
        {"user_id": 1, "timezone": "Asia/Tokyo", "sms": False, "push": False},
        {"user_id": 2, "timezone": "America/Los_Angeles", "sms": False, "push": False},
    ]
    add_users(conn, future, people)
    add_users(conn, DAY, people)
    rules = dataclasses.replace(load_rules(), holdout_share=0.0, exploration_share=0.0)
    score(settings, future, run_id="future", rules=rules)
    delays = {"immediate": 0, "delay_1hour": 60, "delay_6hours": 360}
    for row in offers(conn, future):
        tz = "Asia/Tokyo" if row["user_id"] == 1 else "America/Los_Angeles"
        local_nine = dt.datetime.combine(future, dt.time(9), ZoneInfo(tz))
        assert row["scheduled_at"] == local_nine + dt.timedelta(minutes=delays[row["timing"]])
        assert row["expires_at"] - row["scheduled_at"] == dt.timedelta(hours=24)
    # a past date is released when it is published: sharded, scored now, published a moment later
    score(settings, DAY, run_id="late", shard=0, shards=1, rules=rules)
    scored = {r["user_id"]: r["scheduled_at"] for r in offers(conn)}
    result = publish(settings, "late")
    published = dt.datetime.fromisoformat(result["published_at"])
    assert result["retimed"] == 2
    for row in offers(conn):
        delay = dt.timedelta(minutes=delays[row["timing"]])
        # scored for "now" (plus the offer's delay), a moment before the publish retimes it
        assert row["scheduled_at"] >= published > scored[row["user_id"]] - delay - dt.timedelta(minutes=1)
        assert row["scheduled_at"] == published + delay


def test_a_pinned_publish_moment_schedules_and_publishes_as_if_it_were_now(campaign) -> None:
    conn, settings = campaign
    add_users(conn, DAY, [{"user_id": 1, "timezone": "Asia/Tokyo", "sms": False, "push": False}])
    rules = dataclasses.replace(load_rules(), holdout_share=0.0, exploration_share=0.0)
    naive = dt.datetime(2026, 6, 10, 2, 0)
    with pytest.raises(RecsysError, match="publish_at 2026-06-10T02:00:00 has no time zone"):
        score(settings, DAY, run_id="naive", rules=rules, publish_at=naive)
    assert fetch_value(conn, "select count(*) from recsys.campaign_runs") == 0
    # scored at 01:00 UTC (10:00 in Tokyo, past its 09:00), published at 02:00: released at 02:00
    at = dt.datetime(2026, 6, 10, 2, 0, tzinfo=dt.UTC)
    score(settings, DAY, run_id="pinned", shard=0, shards=1, rules=rules, publish_at=at - dt.timedelta(hours=1))
    with pytest.raises(RecsysError, match="published_at 2026-06-10T02:00:00 has no time zone"):
        publish(settings, "pinned", published_at=naive)
    result = publish(settings, "pinned", published_at=at)
    assert dt.datetime.fromisoformat(result["published_at"]) == at and result["retimed"] == 1
    [row] = offers(conn)
    delays = {"immediate": 0, "delay_1hour": 60, "delay_6hours": 360}
    assert row["scheduled_at"] == at + dt.timedelta(minutes=delays[row["timing"]])
    assert fetch_value(conn, "select published_at from recsys.campaign_runs where run_id = 'pinned'") == at


def test_retention_drops_campaign_partitions_past_the_window(campaign) -> None:
    conn, settings = campaign
    from recsys.data.retention import apply_retention

    old, recent = DAY - dt.timedelta(days=200), DAY - dt.timedelta(days=10)
    for day in (old, recent):
        add_users(conn, day, [{"user_id": 1}, {"user_id": 2}])
        score(settings, day, run_id=f"r{day}", rules=dataclasses.replace(load_rules(), holdout_share=0.5))
    with connect(settings.database_url) as own:
        result = apply_retention(own, settings, load_rules(), DAY)
    assert result.campaign_partitions >= 1
    assert (
        fetch_value(conn, "select to_regclass('recsys.campaign_offers_' || to_char(%s::date, 'YYYYMMDD'))", (old,))
        is None
    )
    dates = {r["campaign_date"] for r in fetch_all(conn, "select campaign_date from recsys.campaign_offers")}
    dates |= {r["campaign_date"] for r in fetch_all(conn, "select campaign_date from recsys.campaign_holdout")}
    assert dates == {recent}


def test_a_scoring_process_killed_with_sigkill_mid_write_leaves_the_previous_offers(campaign) -> None:
    import signal
    import subprocess
    import sys
    import textwrap

    conn, settings = campaign
    add_users(conn, DAY, _population(120))
    first = score(settings, DAY, run_id="before")
    before = {r["user_id"]: r["offer_id"] for r in offers(conn)}
    # a child process scores the date again and SIGKILLs itself after COPY, inside the write
    script = textwrap.dedent(
        f"""
        import datetime as dt, os, signal
        import recsys.campaign.score as s
        import recsys.campaign.write as w
        from recsys.config import load_config
        from recsys.config.settings import load_settings
        from recsys.db import connect
        w._publish_at_scoring = lambda: os.kill(os.getpid(), signal.SIGKILL)
        settings = load_settings(env={{}}, database_url={settings.database_url!r})
        with connect(settings.database_url) as conn:
            s.score_campaign(conn, settings, dt.date(2026, 6, 10), config=load_config(), run_id="killed")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert {r["user_id"]: r["offer_id"] for r in offers(conn)} == before
    assert fetch_value(conn, "select state from recsys.campaign_runs where run_id = 'killed'") == "scoring"
    again = score(settings, DAY, run_id="after")
    rows = offers(conn)
    assert len(rows) == len({r["user_id"] for r in rows}) == again["offers"] == first["offers"]
    assert {r["user_id"]: r["offer_id"] for r in rows} == before
    assert {r["run_id"] for r in rows} == {"after"}


def _comparable(conn: Connection, day: dt.date) -> tuple[list[tuple], list[tuple]]:
    """A date's offers and holdout rows without what differs between two writes of the same decisions."""
    skip = {"offer_id", "run_id", "created_at", "updated_at"}
    rows = [tuple(v for k, v in r.items() if k not in skip) for r in offers(conn, day)]
    hold = fetch_all(
        conn,
        "select user_id, action_id, offer_type, offer_value, channel, timing, model_version, features_as_of, segment "
        "from recsys.campaign_holdout where campaign_date = %s order by user_id",
        (day,),
    )
    return rows, [tuple(h.values()) for h in hold]


def test_attach_path_and_upsert_path_write_identical_rows_and_indexes(campaign) -> None:
    conn, settings = campaign
    day = dt.date(2035, 3, 14)  # a future date: release at the local send time, whenever the run publishes
    part = f"recsys.campaign_offers_{day:%Y%m%d}"
    add_users(conn, day, _population(300))
    first = score(settings, day, run_id="attach")
    assert first["write_path"] == "attach"
    attached = _comparable(conn, day)
    assert len(attached[0]) == first["offers"] > 0 and len(attached[1]) == first["holdout"] > 0
    # every index campaign_offers declares has its partition index attached (none built twice, none missing)
    parent_indexes = fetch_value(
        conn, "select count(*) from pg_index where indrelid = 'recsys.campaign_offers'::regclass"
    )
    child_indexes = fetch_all(
        conn,
        "select i.indexrelid::regclass::text as name, p.inhparent is not null as attached from pg_index as i "
        "left join pg_inherits as p on p.inhrelid = i.indexrelid where i.indrelid = %s::regclass",
        (part,),
    )
    assert len(child_indexes) == parent_indexes >= 4 and all(c["attached"] for c in child_indexes)
    assert fetch_value(conn, "select obj_description(%s::regclass, 'pg_class')", (part,)) == f"campaign_offers of {day}"

    # the same decisions through the upsert path: two shards into an existing, emptied partition
    with conn.cursor() as cur:
        cur.execute("delete from recsys.campaign_offers where campaign_date = %s", (day,))
        cur.execute("delete from recsys.campaign_holdout where campaign_date = %s", (day,))
    for k in (0, 1):
        shard = score(settings, day, run_id="upsert", shard=k, shards=2)
        assert shard["write_path"] == "upsert"
    publish(settings, "upsert")
    assert _comparable(conn, day) == attached
    # and a re-run over existing offers upserts in place
    again = score(settings, day, run_id="rerun")
    assert again["write_path"] == "upsert" and _comparable(conn, day) == attached


def _decisions(conn: Connection, day: dt.date) -> list[tuple]:
    return [
        tuple(r.values())
        for r in fetch_all(
            conn,
            "select user_id, decision, action_id, propensity, is_exploration, skip_reason, segment "
            "from recsys.campaign_decisions where campaign_date = %s order by user_id",
            (day,),
        )
    ]


def _sub_partitions(conn: Connection, table: str, day: dt.date) -> list[str]:
    return [
        r["bound"]
        for r in fetch_all(
            conn,
            "select pg_get_expr(c.relpartbound, c.oid) as bound from pg_inherits as i "
            "join pg_class as c on c.oid = i.inhrelid where i.inhparent = %s::regclass order by 1",
            (f"recsys.{table}_{day:%Y%m%d}",),
        )
    ]


def test_shards_of_a_new_date_each_attach_their_own_hash_sub_partition(campaign) -> None:
    conn, settings = campaign
    day = dt.date(2035, 3, 15)  # a future date: release at the local send time, whenever the run publishes
    add_users(conn, day, _population(300))
    whole = score(settings, day, run_id="whole")
    assert whole["write_path"] == "attach"
    expected, decided = _comparable(conn, day), _decisions(conn, day)
    with conn.cursor() as cur:  # the date afresh
        cur.execute(f"drop table recsys.campaign_offers_{day:%Y%m%d}, recsys.campaign_decisions_{day:%Y%m%d}")
        cur.execute("delete from recsys.campaign_holdout where campaign_date = %s", (day,))
    conn.commit()

    shards = [score(settings, day, run_id="sharded", shard=k, shards=2) for k in (0, 1)]
    assert [s["write_path"] for s in shards] == ["attach_shard", "attach_shard"]
    assert all(s["offers"] > 0 for s in shards)
    publish(settings, "sharded")
    assert _comparable(conn, day) == expected and _decisions(conn, day) == decided
    hashed = ["FOR VALUES WITH (modulus 2, remainder 0)", "FOR VALUES WITH (modulus 2, remainder 1)"]
    assert _sub_partitions(conn, "campaign_offers", day) == hashed
    assert _sub_partitions(conn, "campaign_decisions", day) == hashed
    # each shard's table holds exactly its shard's users, and has every index campaign_offers declares
    for k in (0, 1):
        part = f"recsys.campaign_offers_{day:%Y%m%d}_s{k}of2"
        [held] = fetch_all(
            conn,
            "select count(*) as n, count(*) filter (where not recsys.in_campaign_shard(user_id, 2, %s)) as stray"
            " from recsys.campaign_offers where tableoid = %s::regclass",
            (k, part),
        )
        assert held["stray"] == 0 and held["n"] == shards[k]["offers"]
        # the indexes and constraints each shard built before its ATTACH are the ones ATTACH adopted:
        # one per index of the table, each a child of the date's, none left over or built twice
        for table in ("campaign_offers", "campaign_decisions"):
            own, date_part = f"recsys.{table}_{day:%Y%m%d}_s{k}of2", f"recsys.{table}_{day:%Y%m%d}"
            [built] = fetch_all(
                conn,
                "select count(*) as n, count(p.inhparent) as adopted,"
                " count(*) filter (where c.conname is not null) as constraints"
                " from pg_index as i left join pg_inherits as p on p.inhrelid = i.indexrelid"
                " and p.inhparent in (select indexrelid from pg_index where indrelid = %s::regclass)"
                " left join pg_constraint as c on c.conindid = i.indexrelid and c.conrelid = i.indrelid"
                " where i.indrelid = %s::regclass",
                (date_part, own),
            )
            [declared] = fetch_all(
                conn,
                "select count(*) as n, count(c.conname) as constraints from pg_index as i"
                " left join pg_constraint as c on c.conindid = i.indexrelid and c.conrelid = i.indrelid"
                " where i.indrelid = %s::regclass",
                (f"recsys.{table}",),
            )
            assert built == {"n": declared["n"], "adopted": declared["n"], "constraints": declared["constraints"]}
            assert declared["constraints"] == 1  # the one row per user and date
    # a re-run in two shards, then unsharded, goes through the sub-partitions in place
    for k in (0, 1):
        assert score(settings, day, run_id="again", shard=k, shards=2)["write_path"] == "upsert"
    publish(settings, "again")
    assert _comparable(conn, day) == expected and _decisions(conn, day) == decided
    assert score(settings, day, run_id="once")["write_path"] == "upsert"
    assert _comparable(conn, day) == expected and _decisions(conn, day) == decided


def test_a_date_whose_sharded_run_failed_halfway_is_completed_by_any_later_run(campaign) -> None:
    conn, settings = campaign
    day = dt.date(2035, 3, 16)
    add_users(conn, day, _population(300))
    score(settings, day, run_id="half", shard=0, shards=2)  # shard 1 never comes
    assert len(_sub_partitions(conn, "campaign_offers", day)) == 1
    # a run in three shards: the date is sub-partitioned for two, so its shards write through it
    for k in (0, 1, 2):
        assert score(settings, day, run_id="three", shard=k, shards=3)["write_path"] == "upsert"
    publish(settings, "three")
    assert _sub_partitions(conn, "campaign_offers", day) == [
        "FOR VALUES WITH (modulus 2, remainder 0)",
        "FOR VALUES WITH (modulus 2, remainder 1)",
    ]
    rows = offers(conn, day)
    held = fetch_value(conn, "select count(*) from recsys.campaign_holdout where campaign_date = %s", (day,))
    assert len({r["user_id"] for r in rows}) == len(rows) > 0 and {r["run_id"] for r in rows} == {"three"}
    assert len(_decisions(conn, day)) == 300 and len(rows) + held <= 300


def test_a_run_killed_inside_the_attach_path_leaves_nothing_and_claims_on_other_dates_go_on(campaign) -> None:
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    conn, settings = campaign
    other = DAY + dt.timedelta(days=1)
    add_users(conn, DAY, _population(100))
    add_users(conn, other, _population(100))
    score(settings, DAY, run_id="live")
    with conn.cursor() as cur:  # tonight's offers of DAY are due now
        cur.execute(
            "update recsys.campaign_offers set scheduled_at = now() - interval '1 minute', "
            "expires_at = now() + interval '1 day' where campaign_date = %s",
            (DAY,),
        )
    # a child scores the next date and stops right after ATTACH PARTITION, inside its transaction
    script = textwrap.dedent(
        f"""
        import datetime as dt, time
        import recsys.campaign.score as s
        import recsys.campaign.write as w
        from recsys.config import load_config
        from recsys.config.settings import load_settings
        from recsys.db import connect
        w._attached = lambda: time.sleep(600)
        settings = load_settings(env={{}}, database_url={settings.database_url!r})
        with connect(settings.database_url) as conn:
            s.score_campaign(conn, settings, dt.date.fromisoformat({other.isoformat()!r}), config=load_config(),
                             run_id="killed")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        holding = False
        while not holding and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            holding = fetch_value(
                conn,
                "select exists (select from pg_locks where relation = 'recsys.campaign_offers'::regclass "
                "and mode = 'ShareUpdateExclusiveLock' and granted)",
            )
        assert holding, proc.stderr.read().decode() if proc.poll() is not None else "the child never attached"
        # senders claim DAY's offers while the attach holds its lock: no waiting (lock_timeout would raise)
        with connect(settings.database_url) as sender, sender.cursor() as cur:
            cur.execute("set local lock_timeout = '5s'")
            claimed = 0
            for channel in ("email", "sms", "push"):
                cur.execute("select * from recsys.claim_offers(%s, 'w1', 1000, interval '5 minutes')", (channel,))
                claimed += len(cur.fetchall())
        assert claimed == len(offers(conn, DAY)) > 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (
        fetch_value(conn, "select to_regclass('recsys.campaign_offers_' || to_char(%s::date, 'YYYYMMDD'))", (other,))
        is None
    )
    assert fetch_value(conn, "select count(*) from recsys.campaign_offers where campaign_date = %s", (other,)) == 0
    assert fetch_value(conn, "select count(*) from recsys.campaign_holdout where campaign_date = %s", (other,)) == 0
    again = score(settings, other, run_id="after")
    assert again["write_path"] == "attach" and len(offers(conn, other)) == again["offers"] > 0


def test_a_rule_heuristic_champion_scores_through_the_same_batch_api(campaign) -> None:
    """The registry's rule heuristic (no artifact) scores like a trained model: its offers carry its
    model version, every treated offer is the rule's or an exploration draw, propensities exact."""
    from recsys.campaign.recommend import recommend
    from recsys.data.states import load_states
    from recsys.evaluation.registry import rule_heuristic_record
    from recsys.model.baselines import RuleHeuristicPolicy

    conn, settings = campaign
    catalog = load_catalog()
    rule = rule_heuristic_record(catalog, as_of=DAY, response_model={})
    with connect(conn.dsn) as own:
        register(own, rule)
        record_decision(own, rule.model_version, decision="bootstrap", reasons=[], evaluation={})
    add_users(conn, DAY, _population())
    # the uniform explorer: the PPO model m1 (no longer champion) would otherwise guide exploration
    rules = dataclasses.replace(load_rules(), exploration_share=0.2, explorer="uniform")
    summary = score(settings, DAY, run_id="rule", rules=rules)
    rows = offers(conn)
    assert summary["model_version"] == rule.model_version and summary["offers"] == len(rows) > 100
    assert {r["model_version"] for r in rows} == {rule.model_version}
    # the rule's own choice per user, on the channels the user can be reached on
    reach = fetch_all(
        conn,
        "select user_id, email_opt_in and email is not null as email, sms_opt_in and phone is not null as sms, "
        "push_opt_in and push_token is not null as push from recsys.users order by user_id",
    )
    reachable = {r["user_id"]: r for r in reach}
    ids = np.array([r["user_id"] for r in rows])
    states = load_states(conn, DAY, ids)
    assert np.array_equal(states.user_ids, ids)
    mask = catalog.action_mask(np.array([[reachable[u][c] for c in ("email", "sms", "push")] for u in ids]))
    greedy = RuleHeuristicPolicy(catalog).probabilities(states.obs, mask).argmax(axis=1)
    action = np.array([r["action_id"] for r in rows])
    explored = np.array([r["is_exploration"] for r in rows])
    propensity = np.array([float(r["propensity"]) for r in rows])
    n_allowed = mask.sum(axis=1)
    assert (action[~explored] == greedy[~explored]).all()
    assert (action != greedy).sum() > 0 and ((action != greedy) <= explored).all()
    # the exploration mixture (1 - eps) x rule + eps x uniform over the allowed offers: a distribution
    # per user (it sums to one), and each logged propensity is its probability of the offer sent
    eps = 0.2
    mixture = (1 - eps) * np.eye(catalog.n_actions)[greedy] + eps * mask / n_allowed[:, None]
    assert np.allclose(mixture.sum(axis=1), 1.0)
    assert np.allclose(propensity, mixture[np.arange(len(ids)), action])
    # `recommend` serves the same champion
    user = int(ids[~explored][0])
    shown = recommend(conn, catalog, user_id=user)
    one = load_states(conn, DAY, np.array([user]))
    expected = RuleHeuristicPolicy(catalog).probabilities(one.obs, one.action_mask(catalog)).argmax(axis=1)[0]
    assert (shown.model, shown.action_id, shown.probability) == (rule.model_version, expected, 1.0)


def test_the_newest_challenger_guides_exploration_and_the_run_keeps_its_source(campaign, artifact) -> None:
    """With the rule heuristic as champion and a PPO challenger registered, explored offers follow
    the challenger's softened probabilities: every logged propensity is exactly
    (1 - eps) [rule's offer] + eps q, q = (1 - floor) challenger + floor uniform (temperature 1).
    The run records its source, so a re-run explores the same way after a newer challenger arrives."""
    from recsys.campaign.explore import softmax_exploration
    from recsys.data.states import load_states
    from recsys.evaluation.registry import rule_heuristic_record
    from recsys.model.baselines import RuleHeuristicPolicy
    from recsys.model.policy import PPOPolicy, load_sb3_model

    conn, settings = campaign
    catalog = load_catalog()
    rule = rule_heuristic_record(catalog, as_of=DAY, response_model={})
    with connect(conn.dsn) as own:
        register(own, rule)
        record_decision(own, rule.model_version, decision="bootstrap", reasons=[], evaluation={})
    add_users(conn, DAY, _population())
    eps = 0.3
    rules = dataclasses.replace(load_rules(), exploration_share=eps, holdout_share=0.0)
    assert rules.explorer == "softmax"
    score(settings, DAY, run_id="soft", rules=rules, shard=0, shards=1)  # unpublished: a re-run may replace it
    source = fetch_value(
        conn, "select settings ->> 'exploration_source' from recsys.campaign_runs where run_id = 'soft'"
    )
    assert source == "m1"
    rows = offers(conn)
    reach = fetch_all(
        conn,
        "select user_id, email_opt_in and email is not null as email, sms_opt_in and phone is not null as sms, "
        "push_opt_in and push_token is not null as push from recsys.users order by user_id",
    )
    reachable = {r["user_id"]: r for r in reach}
    ids = np.array([r["user_id"] for r in rows])
    states = load_states(conn, DAY, ids)
    mask = catalog.action_mask(np.array([[reachable[u][c] for c in ("email", "sms", "push")] for u in ids]))
    greedy = RuleHeuristicPolicy(catalog).probabilities(states.obs, mask).argmax(axis=1)
    challenger = PPOPolicy(load_sb3_model(artifact), catalog)
    q = softmax_exploration(challenger.probabilities(states.obs, mask), mask, temperature=1.0, floor=0.1)
    mixture = (1 - eps) * np.eye(catalog.n_actions)[greedy] + eps * q
    assert np.allclose(mixture.sum(axis=1), 1.0)
    action = np.array([r["action_id"] for r in rows])
    propensity = np.array([float(r["propensity"]) for r in rows])
    explored = np.array([r["is_exploration"] for r in rows])
    assert mask[np.arange(len(ids)), action].all()
    assert np.allclose(propensity, mixture[np.arange(len(ids)), action], rtol=1e-5)
    assert (action[~explored] == greedy[~explored]).all() and explored.any()
    before = {r["user_id"]: (r["action_id"], r["propensity"]) for r in rows}
    # a newer challenger: the re-run keeps the run's recorded source, a new run takes the newest
    with connect(conn.dsn) as own:
        register(
            own,
            toy_record(catalog, "m2", toy_ppo_artifact(catalog, seed=9), seed=9, trained_on=DAY, total_timesteps=64),
        )
    score(settings, DAY, run_id="soft", rules=rules, shard=0, shards=1)
    assert {r["user_id"]: (r["action_id"], r["propensity"]) for r in offers(conn)} == before
    score(settings, DAY, run_id="soft-2", rules=rules)
    source = fetch_value(
        conn, "select settings ->> 'exploration_source' from recsys.campaign_runs where run_id = 'soft-2'"
    )
    assert source == "m2"


def test_a_champion_of_the_earlier_feature_set_scores_a_date_built_before_the_prior_columns(campaign) -> None:
    """Features built before migration 013 hold null in its columns: a champion trained on the
    feature set before them reads none of them and scores; a model of today's set is refused with
    the command that rebuilds the date, and the refusal writes nothing."""
    from recsys.config.features import EARLIER_FEATURE_SETS
    from recsys.model.observation import fingerprint_of

    conn, settings = campaign
    add_users(conn, DAY, _population(60))
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("update recsys.user_features set {}").format(
                sql.SQL(", ").join(sql.SQL("{} = null").format(sql.Identifier(n)) for n, _, _ in PRIOR_SHRUNK_FEATURES)
            )
        )
    with pytest.raises(RecsysError, match=r"lack columns that model m1 reads.*--as-of 2026-06-10.*--backfill"):
        score(settings, DAY, run_id="today-set")
    assert offers(conn) == []

    # after an upgrade, every registered model is of the earlier set (none of today's explores)
    with conn.cursor() as cur:
        cur.execute("delete from recsys.policy_models")
    earlier = EARLIER_FEATURE_SETS[0]
    catalog = load_catalog()
    old = toy_ppo_artifact(catalog, seed=6, n_features=len(earlier))
    with connect(conn.dsn) as own:
        register(
            own,
            toy_record(
                catalog,
                "m0",
                old,
                seed=6,
                trained_on=DAY,
                total_timesteps=64,
                feature_fingerprint=fingerprint_of(earlier),
            ),
        )
        record_decision(own, "m0", decision="promoted", reasons=[], evaluation={})
    summary = score(settings, DAY, run_id="earlier-set")
    rows = offers(conn)
    holdout = fetch_value(conn, "select count(*) from recsys.campaign_holdout where campaign_date = %s", (DAY,))
    assert rows and summary["eligible"] == len(rows) + holdout
    run = fetch_all(conn, "select * from recsys.campaign_runs where run_id = 'earlier-set'")[0]
    assert run["model_version"] == "m0" and run["state"] == "published"
