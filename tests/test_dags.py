"""The Airflow DAGs: they parse cheaply, and the nightly DAG runs end to end through `dag.test()`.

Every Airflow run here happens in a child process with its own `AIRFLOW_HOME` (tests/dag_support.py).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dag_support import (
    PY,
    airflow_env,
    airflow_local,
    airflow_metadata,  # noqa: F401 (a fixture)
    campaign_db,  # noqa: F401 (a fixture)
    nightly_command,
    nightly_env,
    result_of,
    run_dag,
    shop_inbox,
)
from psycopg2.extensions import parse_dsn

from recsys.config.settings import PROJECT_ROOT, load_settings
from recsys.db import airflow_connection, connect, connection_url, fetch_all, fetch_value, with_database
from recsys.errors import RecsysError
from recsys.orchestration.pipeline import campaign_date_for, shard_list

NIGHTLY_TASKS = (
    "migrate",
    "extract",
    "ingest_feedback",
    "features",
    "train",
    "evaluate",
    "shard_list",
    "score",
    "publish",
    "report",
)

PARSE_CHECK = r"""
import json, sys
lookups = []
from airflow.sdk import Connection
from airflow.sdk.bases.hook import BaseHook
import airflow.sdk.execution_time.context as ctx
_orig = ctx._get_connection
def spy(conn_id, *a, **k):
    lookups.append(conn_id)
    return _orig(conn_id, *a, **k)
ctx._get_connection = spy
Connection.get = classmethod(lambda cls, conn_id: lookups.append(conn_id))
BaseHook.get_connection = classmethod(lambda cls, conn_id: lookups.append(conn_id))
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": sorted(bag.dag_ids),
    "heavy": [m for m in ("torch", "stable_baselines3", "pandas", "recsys.orchestration.pipeline") if m in sys.modules],
    "lookups": lookups,
}
nightly = bag.dags["recsys_nightly"]
dispatch = bag.dags["recsys_dispatch"]
out["nightly"] = {
    "catchup": nightly.catchup,
    "max_active_runs": nightly.max_active_runs,
    "tags": sorted(nightly.tags),
    "params": {k: nightly.params.get_param(k).description for k in nightly.params},
    "doc": bool(nightly.doc_md),
    "tasks": sorted(nightly.task_ids),
    "retries": nightly.default_args.get("retries"),
    "outlets": [str(getattr(o, "uri", o)) for o in nightly.get_task("report").outlets],
}
out["dispatch"] = {"catchup": dispatch.catchup, "max_active_runs": dispatch.max_active_runs, "tasks": dispatch.task_ids}
print("RESULT " + json.dumps(out))
"""


# --- parse time -----------------------------------------------------------------------------------


def test_dag_files_import_cheaply_without_looking_up_connections(tmp_path: Path) -> None:
    proc = subprocess.run(
        [PY, "-c", PARSE_CHECK, str(PROJECT_ROOT / "dags")],
        env=airflow_env(tmp_path / "airflow"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result_of(proc)
    assert out["errors"] == {}
    assert out["dags"] == ["recsys_dispatch", "recsys_nightly"]
    assert out["heavy"] == []
    assert out["lookups"] == []
    nightly = out["nightly"]
    assert nightly["catchup"] is False and nightly["max_active_runs"] == 1 and nightly["doc"]
    assert "recsys" in nightly["tags"] and nightly["retries"] == 2
    assert set(nightly["params"]) >= {"mode", "total_timesteps", "shards", "campaign_date", "dry_run"}
    assert all(nightly["params"].values()), "every param has a description for the trigger form"
    assert nightly["tasks"] == sorted([*NIGHTLY_TASKS, "inbox_refusals"])
    assert nightly["outlets"] == ["recsys://campaign_offers/"]
    assert out["dispatch"] == {"catchup": False, "max_active_runs": 1, "tasks": ["send"]}


# --- plain functions ------------------------------------------------------------------------------


def test_campaign_date_follows_the_contract() -> None:
    logical = dt.datetime(2026, 3, 1, 23, 30, tzinfo=ZoneInfo("America/New_York"))
    assert campaign_date_for(logical, None) == dt.date(2026, 3, 2)  # the logical date in UTC
    queued = dt.datetime(2026, 3, 5, 2, 0, tzinfo=dt.UTC)
    assert campaign_date_for(None, queued) == dt.date(2026, 3, 5)  # a UI trigger without a logical date
    assert campaign_date_for(logical, queued, "2026-04-01") == dt.date(2026, 4, 1)
    with pytest.raises(RecsysError, match="param campaign_date: expected a date as YYYY-MM-DD, got '1/4/2026'"):
        campaign_date_for(logical, None, "1/4/2026")


def test_shard_list_and_its_bad_input() -> None:
    assert shard_list(3) == [0, 1, 2]
    with pytest.raises(RecsysError, match="param shards: expected 1 to 64, got 0"):
        shard_list(0)


def test_connection_url_from_an_airflow_connection() -> None:
    from airflow.sdk import Connection

    tcp = Connection(
        conn_id="recsys_db", conn_type="postgres", host="db", port=5433, login="u", password="p@ss", schema="shop"
    )
    assert connection_url(tcp) == "postgresql://u:p%40ss@db:5433/shop"
    assert parse_dsn(connection_url(tcp))["password"] == "p@ss"
    socket = Connection.from_json(airflow_connection("postgresql://postgres:@/recsys_demo?host=/srv/pg"), conn_id="x")
    assert parse_dsn(connection_url(socket)) == {"user": "postgres", "dbname": "recsys_demo", "host": "/srv/pg"}


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql://postgres@%2Fsrv%2Fpg:5433/shop",  # Airflow's form: the socket folder percent-encoded
        "postgresql://postgres@/shop?host=%2Fsrv%2Fpg&port=5433",  # libpq's form: the folder in the query
    ],
)
def test_an_airflow_connection_uri_may_point_at_a_unix_socket(uri: str) -> None:
    from airflow.sdk import Connection

    conn = Connection.from_uri(uri, conn_id="recsys_db") if hasattr(Connection, "from_uri") else None
    if conn is None:
        from airflow.models.connection import Connection as ModelConnection

        conn = ModelConnection(conn_id="recsys_db", uri=uri)
    url = connection_url(conn)
    assert parse_dsn(url) == {"user": "postgres", "dbname": "shop", "host": "/srv/pg", "port": "5433"}
    assert "/srv/pg:" not in url.split("?")[0], url


def test_a_socket_url_round_trips_through_every_converter(server_url: str) -> None:
    """The conversions the demo, the simulation and the tests use keep a socket host a host."""
    from airflow.sdk import Connection

    params = parse_dsn(server_url)
    url = with_database(server_url, "elsewhere")
    assert parse_dsn(url) == {**params, "dbname": "elsewhere"}
    back = connection_url(Connection.from_json(airflow_connection(url), conn_id="recsys_db"))
    assert parse_dsn(back) == {**params, "dbname": "elsewhere"}


# --- the nightly DAG end to end -------------------------------------------------------------------


OFFER_COLUMNS = (
    "offer_id, campaign_date, user_id, action_id, offer_type, offer_value, product_category, channel, timing, "
    "scheduled_at, expires_at, status, subject, body, model_version, propensity, is_exploration, features_as_of"
)


def _offers(url: str) -> list[tuple]:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"select {OFFER_COLUMNS} from recsys.campaign_offers order by user_id")  # noqa: S608
        return cur.fetchall()


@pytest.mark.slow
def test_nightly_dag_end_to_end_rerun_and_cleared_shard(
    airflow_metadata: str,  # noqa: F811
    campaign_db: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    night = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)  # release at the local send time
    _, inbox = shop_inbox(tmp_path, night, users=400, seed=11)
    env = nightly_env(tmp_path, campaign_db, inbox, retries=0)
    command = nightly_command(tmp_path, airflow_metadata, night, {"total_timesteps": 2048, "shards": 2, "mode": "auto"})

    first = run_dag(command, env)
    assert first["state"] == "success", first
    states = {(t["task_id"], t["map_index"]): t["state"] for t in first["tasks"]}
    assert set(states.values()) == {"success"}
    assert ("score", 0) in states and ("score", 1) in states and len(states) == 12
    assert not list(inbox.glob("*.csv")) and len(list((inbox / "loaded").glob("*.csv"))) == 3

    with connect(campaign_db) as conn:
        run = fetch_all(conn, "select * from recsys.campaign_runs where run_id = %s", (first["run_id"],))[0]
        assert run["state"] == "published" and run["campaign_date"] == night and run["shard_count"] == 2
        assert run["report"]["seconds_per_task"]["train"] > 0
        # the champion scored the night: the rule heuristic crowned first, or the trained model if the
        # gate promoted it (before issue 12 the first trained model was always the champion)
        trained = run["report"]["model"]
        assert run["report"]["evaluation"]["model_version"] == run["model_version"]
        assert (trained["model_version"] == run["model_version"]) == trained["is_champion"]
        assert trained["baseline_crowned"] is not None and trained["mode"] == "retrain"
        assert "simulator_value" in run["report"]["evaluation"]
        counts = run["counts"]
        n_offers = fetch_value(conn, "select count(*) from recsys.campaign_offers where campaign_date = %s", (night,))
        n_holdout = fetch_value(conn, "select count(*) from recsys.campaign_holdout where campaign_date = %s", (night,))
        assert n_offers > 50 and n_offers == counts["offers"]
        n_rests = fetch_value(
            conn,
            "select count(*) from recsys.campaign_decisions where campaign_date = %s and decision = 'rest'",
            (night,),
        )
        assert n_rests == counts["rests"]
        assert n_offers + n_holdout + n_rests == counts["eligible"]  # every eligible user: offer, hold or rest
        # one offer per eligible user, never to a held-out user, never on a channel without consent
        bad = fetch_value(
            conn,
            """
            select count(*) from recsys.campaign_offers as o
            left join recsys.users as u using (user_id)
            where o.user_id in (select user_id from recsys.campaign_holdout)
                or not coalesce(case o.channel when 'email' then u.email_opt_in when 'sms' then u.sms_opt_in
                    else u.push_opt_in end, false)
            """,
        )
        assert bad == 0
        rows = fetch_all(
            conn,
            "select o.timing, o.channel, o.scheduled_at, coalesce(u.timezone, 'UTC') as tz"
            " from recsys.campaign_offers as o left join recsys.users as u using (user_id)",
        )
        from recsys.campaign import load_rules
        from recsys.config.catalog import load_catalog

        delays = load_catalog().timing_delay_minutes
        send_time = load_rules().send_time
        for r in rows:  # release = the local send time on the night (published before it), + the delay
            local = dt.datetime.combine(night, send_time, tzinfo=ZoneInfo(r["tz"]))
            expected = local + dt.timedelta(minutes=delays[r["timing"]])
            assert r["scheduled_at"] == expected, r
    offers = _offers(campaign_db)

    # the same night again: nothing changes (the night's model is reused, offers upserted in place)
    second = run_dag(command, env)
    assert second["state"] == "success", second
    assert second["run_id"] != first["run_id"]
    assert _offers(campaign_db) == offers
    with connect(campaign_db) as conn:
        # the rule heuristic crowned on the empty registry, and the one model trained that night
        models = fetch_all(conn, "select algorithm from recsys.policy_models order by created_at")
        assert [m["algorithm"] for m in models] == ["rule_heuristic", "PPO"]

    # a shard of the published run cleared in the UI: a no-op
    from recsys.orchestration.pipeline import evaluate, publish, score_shard, train

    settings = load_settings(env={}, database_url=campaign_db, data_dir=tmp_path / "data", inbox=inbox)
    again = score_shard(settings, night, run_id=second["run_id"], shard=1, shards=2)
    assert again["already_published"] is True
    assert _offers(campaign_db) == offers

    # a run whose shard 1 failed and was cleared: it re-runs alone, then the run publishes unchanged
    score_shard(settings, night, run_id="cleared-shard", shard=0, shards=2)
    score_shard(settings, night, run_id="cleared-shard", shard=1, shards=2)
    assert score_shard(settings, night, run_id="cleared-shard", shard=1, shards=2)["shard"] == 1
    assert publish(settings, "cleared-shard")["run_id"] == "cleared-shard"
    assert publish(settings, "cleared-shard")["already"] is True  # a cleared publish task too
    assert _offers(campaign_db) == offers

    # the frequency_cap param: this run's rules, stored with the run; a bad value is refused
    score_shard(settings, night, run_id="capped", shard=0, shards=1, dry_run=True, frequency_cap=1)
    with connect(campaign_db) as conn:
        stored = fetch_value(conn, "select settings->>'cap_total' from recsys.campaign_runs where run_id = 'capped'")
    assert stored == "1"
    with pytest.raises(RecsysError, match="param frequency_cap: expected >= 1, got 0"):
        score_shard(settings, night, run_id="capped-0", shard=0, shards=1, dry_run=True, frequency_cap=0)
    # training and evaluation simulate the same cap, and refuse the same bad value (a re-run of a
    # trained night too, before it reuses the night's model)
    for stage in (train, evaluate):
        with pytest.raises(RecsysError, match="param frequency_cap: expected >= 1, got 0"):
            stage(settings, night, frequency_cap=0)
    assert train(settings, night, frequency_cap=2)["reused"] is True
    assert _offers(campaign_db) == offers

    # the dispatch DAG: offers made due are sent once each through the jsonl adapter, per channel
    with connect(campaign_db) as conn, conn.cursor() as cur:
        cur.execute(
            "update recsys.campaign_offers set scheduled_at = now() - interval '1 minute'"
            " where offer_id in (select offer_id from recsys.campaign_offers order by offer_id limit 20)"
            " returning channel"
        )
        due = sorted(r[0] for r in cur.fetchall())
    command = airflow_local(tmp_path / "airflow", "recsys_dispatch", metadata=airflow_metadata)
    dispatched = run_dag(command, env, timeout=600)
    assert dispatched["state"] == "success", dispatched
    assert sorted(t["map_index"] for t in dispatched["tasks"]) == [0, 1, 2]
    outbox = tmp_path / "data" / "outbox"
    sent = sorted(
        json.loads(line)["channel"] for f in outbox.glob("*.jsonl") for line in f.read_text().splitlines() if line
    )
    assert sent == due
    with connect(campaign_db) as conn:
        assert fetch_value(conn, "select count(*) from recsys.campaign_offers where status = 'sent'") == len(due)


# --- failures are visible: timeouts, failure notices, the publish deadline ------------------------

NOTICE_CHECK = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
out = {}
for dag_id in ("recsys_nightly", "recsys_dispatch"):
    dag = bag.dags[dag_id]
    DagSerialization.to_dict(dag)  # what the DAG processor stores, deadline included
    callbacks = dag.on_failure_callback if isinstance(dag.on_failure_callback, list) else [dag.on_failure_callback]
    out[dag_id] = {
        "dagrun_timeout": dag.dagrun_timeout.total_seconds() if dag.dagrun_timeout else None,
        "callbacks": [f"{c.__module__}.{c.__qualname__}" for c in callbacks if c],
        "tasks": {},
        "deadline": [
            {"reference": type(d.reference).__name__, "interval": d.interval.total_seconds(),
             "callback": d.callback.path, "kwargs": d.callback.kwargs, "kind": type(d.callback).__name__}
            for d in (dag.deadline or [])
        ],
    }
    for task in dag.tasks:
        kwargs = getattr(task, "partial_kwargs", None) or vars(task)  # a mapped task keeps them apart
        timeout = getattr(task, "execution_timeout", None) or kwargs.get("execution_timeout")
        cbs = getattr(task, "on_failure_callback", None) or kwargs.get("on_failure_callback")
        cbs = cbs if isinstance(cbs, list) else [cbs]
        out[dag_id]["tasks"][task.task_id] = {
            "timeout": timeout.total_seconds() if timeout else None,
            "callbacks": [f"{c.__module__}.{c.__qualname__}" for c in cbs if c],
        }
print("RESULT " + json.dumps(out))
"""


def _notice_check(tmp_path: Path, **env: str) -> dict:
    proc = subprocess.run(
        [PY, "-c", NOTICE_CHECK, str(PROJECT_ROOT / "dags")],
        env=airflow_env(tmp_path / "airflow", **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result_of(proc)


def test_the_dags_carry_timeouts_failure_notices_and_the_publish_deadline(tmp_path: Path) -> None:
    out = _notice_check(tmp_path)
    nightly = out["recsys_nightly"]
    assert nightly["dagrun_timeout"] == 6 * 3600
    minutes = {t: v["timeout"] / 60 for t, v in nightly["tasks"].items()}
    assert minutes == {
        "migrate": 15,
        "extract": 60,
        "ingest_feedback": 15,
        "features": 30,
        "train": 180,
        "evaluate": 30,
        "shard_list": 15,
        "score": 30,
        "publish": 15,
        "report": 15,
        **{t: 15 for t in minutes if t not in NIGHTLY_TASKS},  # a task added later gets the default
    }
    notifier = "recsys.orchestration.notify.task_failed"
    assert nightly["callbacks"] == [notifier]
    assert all(v["callbacks"] == [notifier] for v in nightly["tasks"].values()), nightly["tasks"]
    # published by 06:00 UTC: 4 hours after the 02:00 logical date of the default schedule
    assert nightly["deadline"] == [
        {
            "reference": "DagRunLogicalDateDeadline",
            "interval": 4 * 3600,
            "callback": "recsys.orchestration.notify.publish_deadline_missed",
            "kwargs": {"published_by": "06:00 UTC"},
            "kind": "AsyncCallback",
        }
    ]
    dispatch = out["recsys_dispatch"]
    assert dispatch["dagrun_timeout"] == 30 * 60 and dispatch["callbacks"] == [notifier]
    assert dispatch["tasks"] == {"send": {"timeout": 20 * 60, "callbacks": [notifier]}}


def test_timeouts_and_the_deadline_come_from_the_environment(tmp_path: Path) -> None:
    out = _notice_check(
        tmp_path,
        RECSYS_NIGHTLY_SCHEDULE="30 1 * * *",
        RECSYS_PUBLISH_DEADLINE="05:15",
        RECSYS_NIGHTLY_RUN_TIMEOUT_MINUTES="240",
        RECSYS_NIGHTLY_TRAIN_TIMEOUT_MINUTES="90",
        RECSYS_NIGHTLY_TASK_TIMEOUT_MINUTES="5",
        RECSYS_DISPATCH_TIMEOUT_MINUTES="7",
    )
    nightly = out["recsys_nightly"]
    assert nightly["dagrun_timeout"] == 240 * 60
    assert nightly["tasks"]["train"]["timeout"] == 90 * 60
    assert nightly["tasks"]["migrate"]["timeout"] == nightly["tasks"]["report"]["timeout"] == 5 * 60
    assert nightly["tasks"]["extract"]["timeout"] == 60 * 60  # not overridden
    assert nightly["deadline"][0]["interval"] == 3 * 3600 + 45 * 60  # 01:30 -> 05:15
    assert out["recsys_dispatch"]["tasks"]["send"]["timeout"] == 7 * 60
    assert _notice_check(tmp_path, RECSYS_PUBLISH_DEADLINE="off")["recsys_nightly"]["deadline"] == []


def test_publish_deadline_interval_and_its_bad_input() -> None:
    from recsys.errors import ConfigError
    from recsys.orchestration.notify import nightly_timeouts, publish_deadline_interval

    hours = dt.timedelta(hours=1)
    assert publish_deadline_interval(None, "0 2 * * *") == 4 * hours  # the default, 06:00 UTC
    assert publish_deadline_interval("01:00", "0 2 * * *") == 23 * hours  # the next 01:00
    assert publish_deadline_interval("06:00", "@daily") == 6 * hours
    assert publish_deadline_interval("+04:30", "*/30 * * * *") == 4.5 * hours
    assert publish_deadline_interval("off", "0 2 * * *") is None
    with pytest.raises(ConfigError, match=r"schedule '\*/30 \* \* \* \*' does not start at a fixed time.*'\+04:00'"):
        publish_deadline_interval("06:00", "*/30 * * * *")
    with pytest.raises(ConfigError, match="RECSYS_PUBLISH_DEADLINE: expected HH:MM or \\+HH:MM, got '6am'"):
        publish_deadline_interval("6am", "0 2 * * *")
    with pytest.raises(ConfigError, match="'25:00' is not a time of day"):
        publish_deadline_interval("25:00", "0 2 * * *")
    with pytest.raises(ConfigError, match="RECSYS_NIGHTLY_TRAIN_TIMEOUT_MINUTES: expected a whole number"):
        nightly_timeouts({"RECSYS_NIGHTLY_TRAIN_TIMEOUT_MINUTES": "2h"})
    with pytest.raises(ConfigError, match="RECSYS_NIGHTLY_RUN_TIMEOUT_MINUTES: must be at least 1 minute"):
        nightly_timeouts({"RECSYS_NIGHTLY_RUN_TIMEOUT_MINUTES": "0"})


@pytest.fixture
def mailbox() -> Iterator[tuple[int, list]]:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) collecting what it receives."""
    from aiosmtpd.controller import Controller

    received: list = []

    class Collect:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()


def _smtp_connection(port: int) -> str:
    return json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@shop.example"},
        }
    )


def _mails(received: list) -> list:
    import email
    from email import policy

    return [email.message_from_bytes(e.original_content, policy=policy.default) for e in received]


@pytest.mark.slow
def test_a_failing_night_logs_and_mails_a_notice(tmp_path: Path, mailbox: tuple[int, list]) -> None:
    """The real nightly DAG with its database down: the migrate task fails, the notice names it."""
    port, received = mailbox
    env = airflow_env(
        tmp_path / "airflow",
        AIRFLOW_CONN_RECSYS_DB=airflow_connection("postgresql://nobody@127.0.0.1:1/nothing"),
        AIRFLOW_CONN_SMTP_DEFAULT=_smtp_connection(port),
        RECSYS_ALERT_EMAIL="ops@shop.example, oncall@shop.example",
        RECSYS_NIGHTLY_RETRIES="0",
        RECSYS_DATA_DIR=str(tmp_path / "data"),
    )
    command = airflow_local(tmp_path / "airflow", "--date", "2026-12-01T02:00:00Z")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    run = result_of(proc)
    assert run["state"] == "failed"
    assert {t["task_id"]: t["state"] for t in run["tasks"]}["migrate"] == "failed"
    lines = [line for line in proc.stdout.splitlines() if "recsys_nightly task failed:" in line]
    assert len(lines) == 1, proc.stdout[-3000:]
    line = lines[0]
    assert f"task migrate, run {run['run_id']}, try 1 of 1: RecsysError: cannot connect to PostgreSQL" in line
    assert "127.0.0.1:1" in line
    assert "(log: http://localhost:8080/dags/recsys_nightly/runs/" in line and "/tasks/migrate?try_number=1)" in line

    mails = _mails(received)
    assert len(mails) == 1
    mail = mails[0]
    assert sorted(received[0].rcpt_tos) == ["oncall@shop.example", "ops@shop.example"]
    assert mail["From"] == "airflow@shop.example"
    assert mail["Subject"] == f"[recsys] recsys_nightly: task migrate failed in run {run['run_id']}"
    body = next(p for p in mail.walk() if p.get_content_type() == "text/html").get_content()
    assert "try 1 of 1: RecsysError: cannot connect to PostgreSQL" in body and "/tasks/migrate" in body


def test_without_an_alert_address_the_notice_is_a_log_line_only(mailbox: tuple[int, list], tmp_path: Path) -> None:
    """A task failure's callback called as Airflow calls it (a context with ti and exception)."""
    code = r"""
import logging, sys, types
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
from recsys.orchestration import notify
ti = types.SimpleNamespace(dag_id="recsys_nightly", task_id="score", map_index=1, run_id="scheduled__x", try_number=3,
                           task=types.SimpleNamespace(retries=2), log_url="http://airflow/log")
notify.task_failed({"ti": ti, "exception": ValueError("shard 1:\nno users")})
notify.task_failed({"ti": ti, "reason": "task_failure", "run_id": "scheduled__x"})  # the run's: said already
notify.task_failed({"ti": ti, "reason": "timed_out", "run_id": "scheduled__x"})
"""
    port, received = mailbox
    env = airflow_env(tmp_path / "airflow", AIRFLOW_CONN_SMTP_DEFAULT=_smtp_connection(port))
    proc = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        "ERROR recsys.orchestration.notify recsys_nightly task failed: task score[1], run scheduled__x, try 3 of 3: "
        "ValueError: shard 1: no users (log: http://airflow/log)",
        "ERROR recsys.orchestration.notify recsys_nightly run failed: run scheduled__x, reason timed_out; "
        "last task score",
    ]
    assert received == []


def test_a_missed_publish_deadline_logs_and_mails_a_notice(tmp_path: Path, mailbox: tuple[int, list]) -> None:
    """The deadline alert's callback, awaited with the context Airflow's scheduler gives it."""
    code = r"""
import asyncio, datetime as dt, logging, sys
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
from recsys.orchestration import notify
context = {
    "dag_run": {"dag_id": "recsys_nightly", "dag_run_id": "scheduled__2026-12-01T02:00:00+00:00",
                "logical_date": "2026-12-01T02:00:00Z", "state": "running"},
    "deadline": {"id": "d1", "deadline_time": dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.timezone.utc)},
}
asyncio.run(notify.publish_deadline_missed(context, published_by="06:00 UTC"))
"""
    port, received = mailbox
    env = airflow_env(
        tmp_path / "airflow", AIRFLOW_CONN_SMTP_DEFAULT=_smtp_connection(port), RECSYS_ALERT_EMAIL="ops@shop.example"
    )
    proc = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    notice = (
        "recsys_nightly deadline missed: run scheduled__2026-12-01T02:00:00+00:00 (logical date "
        "2026-12-01T02:00:00Z, state running) was not published by 06:00 UTC (2026-12-01T06:00:00+00:00); "
        "senders have no offers of it yet"
    )
    assert f"ERROR recsys.orchestration.notify {notice}" in proc.stdout.splitlines()
    mails = _mails(received)
    assert [m["Subject"] for m in mails] == [
        "[recsys] recsys_nightly: run scheduled__2026-12-01T02:00:00+00:00 not published by 06:00 UTC"
    ]


def test_a_runs_peak_memory_is_its_own_process_s_not_its_parent_s() -> None:
    """The peak RSS a DAG run reports (`peak_rss_bytes`, in its RESULT line) grows with what this
    process touches, and a child started by a bigger parent reports its own, smaller peak."""
    from recsys.orchestration.airflow_local import peak_rss_bytes

    block = b"\x01" * (256 * 2**20)  # 256 MB, every page written
    parent = peak_rss_bytes()
    assert parent >= len(block)
    code = "from recsys.orchestration.airflow_local import peak_rss_bytes; print(peak_rss_bytes())"
    child = int(subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0 < child < len(block) < parent
    del block
