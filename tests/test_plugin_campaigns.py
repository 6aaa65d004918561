"""The Campaigns plugin, tested through a real Airflow API server and once in headless Chromium.

A module fixture creates its own PostgreSQL database (so other tests' campaign runs never mix in),
fills it with two campaign runs, their offers, holdout, offer events, purchases and three models,
and starts `airflow api-server` on SQLite metadata with the simple auth manager (known passwords)
and this repository's `plugins/` folder, pointing `AIRFLOW_CONN_RECSYS_DB` at that database. The
server and the browser come from tests/airflow_ui_support.py (shared with the README's screenshot).
"""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import airflow_ui_support as ui
import psycopg2
import pytest
from psycopg2 import sql

from recsys.config.settings import PROJECT_ROOT, load_settings
from recsys.db import airflow_connection, connect, scratch_database
from recsys.db.migrate import migrate

pytestmark = pytest.mark.slow

ARTIFACTS = PROJECT_ROOT / "test-artifacts"

RUN = "scheduled__2026-11-27T02:00:00+00:00"
OLD_RUN = "manual__2026-11-26T08:00:00+00:00"

# user, channel, offer type, timing, scheduled at (UTC), status
OFFERS = [
    (1, "email", "discount", "immediate", "2026-11-27 09:00", "sent"),
    (2, "email", "discount", "delay_1hour", "2026-11-27 10:00", "sent"),
    (3, "email", "free_shipping", "immediate", "2026-11-27 09:00", "sent"),
    (4, "sms", "recommendation", "delay_6hours", "2026-11-27 15:00", "scheduled"),
    (5, "sms", "discount", "immediate", "2026-11-27 09:00", "sent"),
    (6, "push", "bundle", "immediate", "2026-11-27 09:00", "scheduled"),
]
HOLDOUT = [101, 102, 103, 104]
# (user, event) for RUN's offers; converted rows carry revenue
EVENTS = [(u, "delivered", None) for u in (1, 2, 3, 5)]
EVENTS += [(u, "opened", None) for u in (1, 2, 3)]
EVENTS += [(u, "clicked", None) for u in (1, 2)]
EVENTS += [(1, "converted", 50), (2, "converted", 30)]
PURCHASES = [(1, "2026-11-27 12:00", 50), (2, "2026-11-27 13:00", 30), (101, "2026-11-28 10:00", 20)]

# --- the campaign database ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def campaign_db(server_url: str) -> Iterator[str]:
    """A fresh, migrated database holding two campaign runs, their outcomes and three models."""
    with scratch_database(server_url, "recsys_plugin") as url:
        with connect(url) as conn:
            migrate(conn, load_settings(env={}, database_url=url))
            with conn.cursor() as cur:
                _fill(cur)
        yield url


def _fill(cur: Any) -> None:
    for version, parent, mode, decision, reasons, champion, sim, dr in [
        ("m-001", None, "retrain", "bootstrap", [], False, 0.11, 0.10),
        ("m-002", "m-001", "fine_tune", "promoted", [], True, 0.15, 0.14),
        ("m-003", "m-002", "fine_tune", "rejected", ["off-policy lower bound below the champion's"], False, 0.16, 0.09),
    ]:
        cur.execute(
            """
            insert into recsys.policy_models (
                model_version, parent_version, algorithm, training_mode, hyperparameters, seed,
                catalog_fingerprint, feature_fingerprint, catalog, trained_on, total_timesteps,
                evaluation, gate_decision, gate_reasons, is_champion, artifact, artifact_sha256, created_at)
            values (%s, %s, 'PPO', %s, '{}', 1, 'c', 'f', '{}', '2026-11-26', 20000,
                    %s, %s, %s, %s, '\\x00', 'sha', '2026-11-26 03:00Z'::timestamptz + %s * interval '1 hour')
            """,
            (
                version,
                parent,
                mode,
                json.dumps({"simulator_value": sim, "random_value": 0.05, "dr_value": dr, "dr_lower": dr - 0.02}),
                decision,
                json.dumps(reasons),
                champion,
                int(version[-1]),
            ),
        )
    for run_id, day in [(OLD_RUN, "2026-11-26"), (RUN, "2026-11-27")]:
        cur.execute(
            """
            insert into recsys.campaign_runs (run_id, campaign_date, model_version, state, counts,
                created_at, published_at, finished_at)
            values (%s, %s, 'm-002', 'published', %s, %s::date + interval '2 hours',
                    %s::date + interval '2 hours 10 minutes', %s::date + interval '2 hours 9 minutes')
            """,
            (run_id, day, json.dumps(_recorded_counts(run_id)), day, day, day),
        )
        cur.execute(
            sql.SQL(
                "create table recsys.{} partition of recsys.campaign_offers for values from (%s) to (%s::date + 1)"
            ).format(sql.Identifier(f"campaign_offers_{day.replace('-', '')}")),
            (day, day),
        )
    offer_rows = [
        (OLD_RUN, "2026-11-26", u, "email", "discount", "immediate", "2026-11-26 09:00", "sent") for u in (1, 2)
    ]
    offer_rows += [(RUN, "2026-11-27", *o) for o in OFFERS]
    for run_id, day, user, channel, offer_type, timing, at, status in offer_rows:
        cur.execute(
            """
            insert into recsys.campaign_offers (run_id, campaign_date, user_id, action_id, offer_type,
                offer_value, value_unit, channel, timing, scheduled_at, expires_at, status, sent_at, body,
                model_version, propensity, is_exploration, features_as_of, segment)
            values (%s, %s, %s, 0, %s, 10, 'percent_off', %s, %s, %s::timestamptz,
                    %s::timestamptz + interval '2 days', %s,
                    case when %s = 'sent' then %s::timestamptz + interval '1 minute' end,
                    'hello', 'm-002', 0.5, false, %s, 'loyal')
            """,
            (run_id, day, user, offer_type, channel, timing, at + "Z", at + "Z", status, status, at + "Z", day),
        )
    for user in HOLDOUT:
        cur.execute(
            """
            insert into recsys.campaign_holdout (run_id, campaign_date, user_id, action_id, offer_type,
                offer_value, channel, timing, model_version, features_as_of, segment)
            values (%s, '2026-11-27', %s, 0, 'discount', 10, 'email', 'immediate', 'm-002', '2026-11-27', 'loyal')
            """,
            (RUN, user),
        )
    for user, event, revenue in EVENTS:
        cur.execute(
            """
            insert into recsys.offer_events (offer_id, event, event_at, revenue)
            select offer_id, %s, scheduled_at + interval '2 hours', %s
            from recsys.campaign_offers where run_id = %s and user_id = %s
            """,
            (event, revenue, RUN, user),
        )
    cur.execute(
        """
        insert into recsys.load_log (source_path, file_name, file_sha256, file_bytes, status, reference_at)
        values ('test', 'test', 'test', 0, 'loaded', now()) returning load_id
        """
    )
    load_id = cur.fetchone()[0]
    cur.execute("select recsys.ensure_event_partitions('2026-11-01', '2026-11-30')")
    for i, (user, at, amount) in enumerate(PURCHASES):
        cur.execute(
            """
            insert into recsys.behavior_events (event_id, user_id, session_id, event_at, action, amount, load_id)
            values (%s, %s, %s, %s, 'purchase', %s, %s)
            """,
            (f"p{i}", user, f"s{i}", at + "Z", amount, load_id),
        )


def _recorded_counts(run_id: str) -> dict[str, Any]:
    """campaign_runs.counts as scoring records them (recsys.campaign.score), for the fixture's runs."""
    if run_id == OLD_RUN:
        offers = [("email", "discount", "immediate")] * 2
        holdout = 0
    else:
        offers = [(channel, offer_type, timing) for _, channel, offer_type, timing, _, _ in OFFERS]
        holdout = len(HOLDOUT)

    def count(i: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in offers:
            out[o[i]] = out.get(o[i], 0) + 1
        return out

    skipped = {"no_consent": 3, "no_features": 1}
    return {
        "users": len(offers) + holdout + sum(skipped.values()),
        "eligible": len(offers) + holdout,
        "offers": len(offers),
        "holdout": holdout,
        "exploration": 1,
        "skipped": skipped,
        "channel": count(0),
        "offer_type": count(1),
        "timing": count(2),
    }


def _expected_lift(url: str, run_id: str) -> dict[str, float]:
    """The run's lift computed here from v_campaign_summary's rows (difference of rates, Wald 95%)."""
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            """
            select sum(treated_users), sum(coalesce(treated_purchase_rate, 0) * treated_users),
                   sum(holdout_users), sum(coalesce(holdout_purchase_rate, 0) * holdout_users)
            from recsys.v_campaign_summary where run_id = %s
            """,
            (run_id,),
        )
        n1, b1, n0, b0 = (float(v) for v in cur.fetchone())
    p1, p0 = b1 / n1, b0 / n0
    se = math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    return {"treated_users": n1, "holdout_users": n0, "lift": p1 - p0, "low": p1 - p0 - 1.96 * se}


# --- the Airflow API server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory, campaign_db: str) -> tuple[Path, dict[str, str]]:
    """A migrated Airflow home (SQLite metadata) configured for the plugin and the campaign database."""
    home = tmp_path_factory.mktemp("airflow_home")
    return home, ui.migrated_airflow_home(home, campaign_db)


@pytest.fixture(scope="module")
def api(airflow_home: tuple[Path, dict[str, str]]) -> Iterator[str]:
    """Base URL of a running `airflow api-server` with the plugin loaded; stopped after the module."""
    with ui.api_server(*airflow_home) as base:
        yield base


@pytest.fixture(scope="module")
def token(api: str) -> str:
    return ui.login(api, "admin")


def _get_json(url: str, token: str) -> Any:
    status, body = ui.request(url, token=token)
    assert status == 200, body[:500]
    return json.loads(body)


# --- tests ----------------------------------------------------------------------------------------


def test_airflow_lists_the_plugin(airflow_home: tuple[Path, dict[str, str]]) -> None:
    _, env = airflow_home
    out = subprocess.run(
        [str(ui.AIRFLOW), "plugins", "--output", "json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    plugins = json.loads(out[out.index("[") :])
    ours = next(p for p in plugins if p["name"] == "recsys_campaigns")
    assert "/recsys" in str(ours["fastapi_apps"])
    assert "'name': 'Campaigns'" in str(ours["external_views"])
    assert "recsys/campaigns" in str(ours["external_views"])


def test_importing_the_plugin_is_light_and_connects_to_nothing() -> None:
    code = (
        "import sys, psycopg2\n"
        "def refuse(*a, **k): raise AssertionError('connected at import')\n"
        "psycopg2.connect = refuse\n"
        f"sys.path.insert(0, {str(PROJECT_ROOT / 'plugins')!r})\n"
        "import recsys_campaigns_plugin\n"
        "print(sorted(m for m in ('torch', 'pandas', 'stable_baselines3', 'numpy') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_CONN_RECSYS_DB"] = "postgresql://nobody@127.0.0.1:1/nothing"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_missing_or_unreachable_database_is_named_in_one_line(airflow_home: tuple[Path, dict[str, str]]) -> None:
    """What the page answers (503 with this detail) when recsys_db is undefined or does not answer."""
    _, env = airflow_home
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(PROJECT_ROOT / 'plugins')!r})\n"
        "from recsys_campaigns import data\n"
        "try:\n"
        "    with data.connect():\n"
        "        pass\n"
        "except data.DatabaseUnavailable as e:\n"
        "    print(e)\n"
    )

    def message(**overrides: str) -> str:
        run_env = {k: v for k, v in env.items() if k not in ("AIRFLOW_CONN_RECSYS_DB", "RECSYS_DATABASE_URL")}
        run_env.update(overrides)
        done = subprocess.run([sys.executable, "-c", code], env=run_env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        lines = done.stdout.strip().splitlines()
        assert len(lines) == 1, lines  # one line, even for libpq's multi-line errors
        return lines[0]

    assert message() == (
        "no campaign database: define the Airflow connection 'recsys_db' (AIRFLOW_CONN_RECSYS_DB) "
        "or set RECSYS_DATABASE_URL"
    )
    unreachable = message(AIRFLOW_CONN_RECSYS_DB="postgresql://nobody@127.0.0.1:1/nothing")
    assert unreachable.startswith("cannot connect to the campaign database (recsys_db): ")
    assert "127.0.0.1" in unreachable


def test_a_run_whose_summary_times_out_still_shows_the_rest(campaign_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """v_campaign_summary reads every offer and purchase of a run; past the timeout the page degrades."""
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "plugins"))
    from recsys_campaigns import data
    from recsys_campaigns.app import CHANNELS, template_environment

    blocker = psycopg2.connect(campaign_db)  # holds a lock the summary (and only it) needs
    conn = psycopg2.connect(campaign_db)
    try:
        with blocker.cursor() as cur:
            cur.execute("lock table recsys.offer_events in access exclusive mode")
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            cur.execute("select set_config('statement_timeout', '300', true)")
        found = data.run(conn, RUN)
        schedule = data.schedule(conn, RUN)  # the transaction is still usable
    finally:
        blocker.rollback()
        blocker.close()
        conn.rollback()
        conn.close()
    assert found["outcomes"] is None and found["breakdown"] == []
    assert found["outcomes_unavailable"] == (
        f"the outcomes of run {RUN} (v_campaign_summary) took longer than the page's statement timeout "
        "(300ms); query the view directly"
    )
    assert found["offers"] == 6
    assert sum(r["offers"] for r in schedule) == 6
    html = (
        template_environment()
        .get_template("campaigns.html")
        .render(
            channels=CHANNELS, runs=[], models=[], selected={"run": found, "histogram": {"bars": []}, "breakdown": []}
        )
    )
    assert "Outcomes and lift are not shown: the outcomes of run" in html
    assert "Lift over the control group" not in html


def test_the_ui_lists_the_campaigns_entry(api: str, token: str) -> None:
    plugins = _get_json(f"{api}/api/v2/plugins", token)["plugins"]
    ours = next(p for p in plugins if p["name"] == "recsys_campaigns")
    assert [v["name"] for v in ours["external_views"]] == ["Campaigns"]
    assert ours["external_views"][0]["href"] == "recsys/campaigns"


@pytest.mark.parametrize(
    "path", ["/recsys/campaigns", "/recsys/api/runs", "/recsys/api/models", "/recsys/api/overview"]
)
def test_requests_without_a_valid_login_are_refused(api: str, path: str) -> None:
    status, _ = ui.request(api + path)
    assert status == 401
    status, _ = ui.request(api + path, token="not-a-jwt")
    assert status in (401, 403)
    status, _ = ui.request(api + path, cookie="not-a-jwt")
    assert status in (401, 403)


@pytest.mark.parametrize(
    "path", ["/recsys/docs", "/recsys/redoc", "/recsys/openapi.json", "/recsys/docs/oauth2-redirect"]
)
def test_fastapi_docs_routes_are_off(api: str, token: str, path: str) -> None:
    """FastAPI serves its docs outside the app's dependencies: they must not exist at all."""
    status, body = ui.request(api + path)
    assert status in (401, 404), (status, body[:200])
    assert b"openapi" not in body.lower() and b"/recsys/api/runs" not in body
    status, _ = ui.request(api + path, token=token)
    assert status == 404


SESSION_CHECK = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import psycopg2
from recsys_campaigns import data
out = {"views": {}}
with data.connect() as conn, conn.cursor() as cur:
    cur.execute("select current_user, session_user, current_setting('transaction_read_only')")
    out["current_user"], out["session_user"], out["read_only"] = cur.fetchone()
    for view in ("v_campaign_runs", "v_campaign_schedule", "v_campaign_summary", "v_model_leaderboard"):
        cur.execute(f"select count(*) from recsys.{view}")
        out["views"][view] = cur.fetchone()[0]
    for name, statement in [
        ("select_users", "select count(*) from recsys.users"),
        ("select_offers", "select count(*) from recsys.campaign_offers"),
        ("insert_users", "insert into recsys.users (user_id) values (999999)"),
        ("write_mode", "set transaction read write"),
        ("reset_and_read", "reset role; select count(*) from recsys.users"),
    ]:
        cur.execute("savepoint probe")
        try:
            cur.execute(statement)
            out[name] = "allowed"
        except psycopg2.Error as e:
            out[name] = e.pgcode
        cur.execute("rollback to savepoint probe")
    cur.execute("select has_table_privilege(current_user, 'recsys.campaign_offers', 'insert, update, delete')")
    out["may_write_offers"] = cur.fetchone()[0]
print("RESULT " + json.dumps(out))
"""


def _session_check(env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", SESSION_CHECK, str(PROJECT_ROOT / "plugins")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_the_page_reads_as_the_analyst_role(airflow_home: tuple[Path, dict[str, str]], campaign_db: str) -> None:
    """The page's session: the analyst role, every view it shows readable, no table, no write."""
    _, env = airflow_home
    out = _session_check(env)
    assert out["current_user"] == load_settings(env={}).analyst_role == "recsys_analyst"
    assert out["session_user"] == psycopg2.extensions.parse_dsn(campaign_db).get("user", "postgres")
    assert (out["views"]["v_campaign_runs"], out["views"]["v_model_leaderboard"]) == (2, 3)
    assert out["views"]["v_campaign_schedule"] > 0 and out["views"]["v_campaign_summary"] > 0
    assert out["select_users"] == out["select_offers"] == "42501"  # insufficient_privilege
    assert out["insert_users"] in ("42501", "25006")  # no privilege / read-only transaction
    assert out["write_mode"] == "25001"  # the transaction has run queries: it stays read-only
    assert out["read_only"] == "on" and out["may_write_offers"] is False
    # `set role` guards the page's own queries; only a login of its own bounds arbitrary SQL
    assert out["reset_and_read"] == "allowed"


@pytest.fixture
def owner_login(server_url: str) -> Iterator[dict[str, str]]:
    """A database owned by a non-superuser login with CREATEROLE (as docker-compose creates it)."""
    tag = uuid.uuid4().hex[:8]
    names = {"owner": f"rs_owner_{tag}", "db": f"rs_owner_{tag}_db", "analyst": f"rs_{tag}_analyst"}
    names["sender"], names["reader"] = f"rs_{tag}_sender", f"rs_{tag}_reader"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("create role {} login createrole password 'pw'").format(sql.Identifier(names["owner"])))
        cur.execute(sql.SQL("create database {} owner {}").format(*map(sql.Identifier, (names["db"], names["owner"]))))
    p = psycopg2.extensions.parse_dsn(server_url)
    names["url"] = psycopg2.extensions.make_dsn(
        host=p.get("host"), port=p.get("port"), dbname=names["db"], user=names["owner"], password="pw"
    )
    try:
        yield names
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(names["db"])))
            for role in ("reader", "analyst", "sender", "owner"):
                cur.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(names[role])))
        admin.close()


def test_a_schema_owner_login_reads_as_the_analyst_role(
    airflow_home: tuple[Path, dict[str, str]], owner_login: dict[str, str]
) -> None:
    """`recsys db migrate` run by the owner login lets that login act as the analyst role."""
    if str(psycopg2.extensions.parse_dsn(owner_login["url"]).get("host", "")).startswith("/"):
        pytest.skip("password login needs a TCP test server")
    settings = load_settings(
        env={}, database_url=owner_login["url"], analyst_role=owner_login["analyst"], sender_role=owner_login["sender"]
    )
    with connect(owner_login["url"]) as conn:
        migrate(conn, settings)
    with connect(owner_login["url"]) as conn, conn.cursor() as cur:  # the deployer's login for the page
        cur.execute(
            sql.SQL("create role {} login password 'pw' in role {}").format(
                sql.Identifier(owner_login["reader"]), sql.Identifier(owner_login["analyst"])
            )
        )
    _, env = airflow_home
    env = {**env, "RECSYS_ANALYST_ROLE": owner_login["analyst"]}
    env["AIRFLOW_CONN_RECSYS_DB"] = airflow_connection(owner_login["url"])
    out = _session_check(env)
    assert (out["current_user"], out["session_user"]) == (owner_login["analyst"], owner_login["owner"])
    assert out["views"]["v_campaign_runs"] == 0
    assert out["select_users"] == "42501"

    # a login of the page's own (recsys_analyst_db) is preferred, and bounds even a `reset role`
    reader_url = psycopg2.extensions.make_dsn(owner_login["url"], user=owner_login["reader"], password="pw")
    env["AIRFLOW_CONN_RECSYS_ANALYST_DB"] = airflow_connection(reader_url)
    out = _session_check(env)
    assert (out["current_user"], out["session_user"]) == (owner_login["analyst"], owner_login["reader"])
    assert out["select_users"] == out["reset_and_read"] == "42501"


def test_a_viewer_login_may_read(api: str) -> None:
    status, body = ui.request(f"{api}/recsys/api/runs?limit=1", token=ui.login(api, "viewer1"))
    assert status == 200
    assert json.loads(body)["runs"][0]["run_id"] == RUN


def test_latest_runs_have_what_each_run_scored(api: str, token: str) -> None:
    runs = _get_json(f"{api}/recsys/api/runs", token)["runs"]
    assert [r["run_id"] for r in runs] == [RUN, OLD_RUN]
    run = runs[0]
    assert run["campaign_date"] == "2026-11-27"
    assert run["state"] == "published"
    assert run["model_version"] == "m-002"
    assert (run["users"], run["eligible_users"], run["offers"], run["holdout_users"]) == (14, 10, 6, 4)
    assert run["offers_by_channel"] == {"email": 3, "sms": 2, "push": 1}
    assert run["offers_by_offer_type"] == {"discount": 3, "free_shipping": 1, "recommendation": 1, "bundle": 1}
    assert run["offers_by_timing"] == {"immediate": 4, "delay_1hour": 1, "delay_6hours": 1}
    assert run["skipped_by_reason"] == {"no_consent": 3, "no_features": 1}
    assert run["published_at"].startswith("2026-11-27T02:10:00")
    assert (runs[1]["offers"], runs[1]["offers_by_channel"]) == (2, {"email": 2})
    assert len(_get_json(f"{api}/recsys/api/runs?limit=1", token)["runs"]) == 1


def test_run_detail_has_outcomes_lift_histogram_and_breakdown(api: str, token: str, campaign_db: str) -> None:
    detail = _get_json(f"{api}/recsys/api/runs/{urllib.parse.quote(RUN, safe='')}", token)
    outcomes = detail["run"]["outcomes"]
    assert (outcomes["sent"], outcomes["delivered"], outcomes["opened"]) == (4, 4, 3)
    assert (outcomes["clicked"], outcomes["converted"], outcomes["revenue"]) == (2, 2, 80.0)
    expected = _expected_lift(campaign_db, RUN)
    lift = outcomes["lift"]
    assert lift["treated_users"] == expected["treated_users"] == 6
    assert lift["holdout_users"] == expected["holdout_users"] == 4
    assert lift["treated_purchase_rate"] == pytest.approx(2 / 6)  # users 1 and 2 bought on the day
    assert lift["holdout_purchase_rate"] == pytest.approx(1 / 4)  # user 101 the day after
    assert lift["lift"] == pytest.approx(expected["lift"]) == pytest.approx(2 / 6 - 1 / 4)
    assert lift["lift_ci_low"] == pytest.approx(expected["low"], rel=1e-3)
    assert lift["lift_ci_low"] < lift["lift"] < lift["lift_ci_high"]

    bars = {b["hour"]: (b["total"], b["by_channel"]) for b in detail["histogram"]["bars"]}
    assert bars == {
        "2026-11-27 09:00": (4, {"email": 2, "sms": 1, "push": 1}),
        "2026-11-27 10:00": (1, {"email": 1, "sms": 0, "push": 0}),
        "2026-11-27 15:00": (1, {"email": 0, "sms": 1, "push": 0}),
    }
    assert detail["histogram"]["peak"] == 4
    by_offer = {(b["channel"], b["offer_type"], b["timing"]): (b["offers"], b["sent"]) for b in detail["breakdown"]}
    assert by_offer[("email", "discount", "immediate")] == (1, 1)
    assert by_offer[("sms", "recommendation", "delay_6hours")] == (1, 0)
    assert sum(v[0] for v in by_offer.values()) == 6


def test_a_run_without_holdout_has_no_lift(api: str, token: str) -> None:
    detail = _get_json(f"{api}/recsys/api/runs/{urllib.parse.quote(OLD_RUN, safe='')}", token)
    outcomes = detail["run"]["outcomes"]
    assert (outcomes["sent"], outcomes["converted"]) == (2, 0)
    assert outcomes["lift"]["holdout_users"] == 0
    assert outcomes["lift"]["lift"] is None  # no control group: no lift, not a made-up one


def test_unknown_run_is_a_404_naming_it(api: str, token: str) -> None:
    status, body = ui.request(f"{api}/recsys/api/runs/no-such-run", token=token)
    assert status == 404
    assert "no-such-run" in json.loads(body)["detail"]


def test_model_leaderboard_shows_the_gate_decisions(api: str, token: str) -> None:
    models = _get_json(f"{api}/recsys/api/models", token)["models"]
    assert [m["model_version"] for m in models] == ["m-003", "m-002", "m-001"]
    decisions = {m["model_version"]: (m["gate_decision"], m["is_champion"]) for m in models}
    assert decisions == {"m-003": ("rejected", False), "m-002": ("promoted", True), "m-001": ("bootstrap", False)}
    assert models[0]["gate_reasons"] == ["off-policy lower bound below the champion's"]
    assert models[1]["dr_value"] == pytest.approx(0.14)


def test_html_page_renders_the_numbers(api: str, token: str, campaign_db: str) -> None:
    status, body = ui.request(f"{api}/recsys/campaigns", token=token)
    assert status == 200
    html = body.decode()
    assert "<h1>Campaigns</h1>" in html
    assert RUN in html and OLD_RUN in html
    assert '<b id="run-offers">6</b>' in html
    assert '<b id="run-sent">4</b>' in html
    assert '<b id="run-converted">2</b>' in html
    assert f'<b id="run-lift">{100 * _expected_lift(campaign_db, RUN)["lift"]:+.1f} pp</b>' in html
    assert "email 3" in html and "sms 2" in html and "push 1" in html
    assert "no_consent 3" in html
    assert "2026-11-27 09:00" in html and "2026-11-27 15:00" in html
    assert 'class="email" style="width: 50.00%"' in html  # 2 of the peak hour's 4 offers
    assert "m-003" in html and "rejected" in html and "off-policy lower bound below the champion" in html
    assert "http://" not in html and "https://" not in html  # nothing loaded from elsewhere


def test_html_page_for_one_run_and_through_the_cookie(api: str, token: str) -> None:
    url = f"{api}/recsys/campaigns?run_id={urllib.parse.quote(OLD_RUN, safe='')}"
    status, body = ui.request(url, cookie=token)
    assert status == 200
    assert f"Run {OLD_RUN}" in body.decode()
    assert '<b id="run-offers">2</b>' in body.decode()


# --- headless Chromium ----------------------------------------------------------------------------


def test_campaigns_page_in_headless_chromium(api: str) -> None:
    if ui.CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian package `chromium`; .ci/run installs it)")
    browser = ui.Chromium(ui.CHROMIUM)
    try:
        page_text, nav_text = ui.open_campaigns_page(browser, api)
        png = base64.b64decode(browser.send("Page.captureScreenshot", format="png")["data"])
    finally:
        browser.close()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "campaigns_page.png"
    shot.write_bytes(png)
    print(f"screenshot of the Campaigns page: {shot}")
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "Browse" in nav_text  # the Airflow UI around the page (Campaigns sits under Browse)
    assert "Latest runs" in page_text
    assert RUN in page_text
    assert "Scheduled send times (UTC)" in page_text
    assert "m-003" in page_text and "rejected" in page_text
