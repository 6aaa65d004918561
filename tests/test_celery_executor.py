"""The nightly DAG scaled out on Airflow's CeleryExecutor, as `docker compose --profile celery` runs it.

Redis is the broker (127.0.0.1:6379 on this project's machines; `RECSYS_TEST_REDIS_URL` points
elsewhere). The test starts, each as a process of its own: five Celery workers with their own
hostnames, the scheduler, and the API server whose Execution API Airflow 3 workers report to, with
Airflow's metadata in a fresh PostgreSQL database. It triggers the real `recsys_nightly` DAG with
`airflow dags trigger`, waits for the run, and checks in the metadata database that the mapped score
shards ran on different workers. The offers must match those of an in-process run (`dag.test()`, as
tests/test_dags.py runs it) of the same input in another campaign database: offer ids come from a
sequence, so they may interleave; what each user is offered, when, and with which propensity may not.

Parallel test sessions share the Redis server: each session's broker keys carry a prefix of its own
and its tasks go to a queue of its own. Without Redis the test is skipped with the reason, except in
CI (`CI` set), where a missing Redis is a failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import pytest
from psycopg2.extensions import parse_dsn

from recsys.config.settings import PROJECT_ROOT
from recsys.db import airflow_connection, connect, fetch_all, fetch_value, scratch_database

PY = sys.executable
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
REDIS_URL = os.environ.get("RECSYS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WORKERS = ("worker-a", "worker-b", "worker-c", "worker-d", "worker-e")
SHARDS = 2
# One task at a time per worker and no broker prefetching (recsys.orchestration.celery_config), so
# two shards queued together go to two workers: with prefetching, a busy worker took the second
# shard off the queue and ran both in turn (3 of 7 runs). A worker stays busy for up to about 5 s
# after its task ends (Airflow's supervisor finishing the workload), so the three tasks just before
# the shards (train, evaluate, shard_list) can still hold three workers when the shards are queued:
# with three workers, one free worker ran both shards in turn (seen twice in a row). Five leave two
# free. Logs stay in the shared AIRFLOW_HOME (no log server per worker on one machine's port 8793).
WORKER_OPTIONS = ("--concurrency", "1", "--skip-serve-logs", "--without-mingle", "--without-gossip")
COMPARED = "campaign_date, user_id, action_id, scheduled_at, propensity"


def worker_hostname() -> str:
    """Airflow's `[core] hostname_callable` in the test's workers.

    Airflow records the machine's name as each task instance's `hostname`, and two workers on one
    machine share it; each worker here reports its Celery hostname instead, as separate machines or
    containers (the compose profile's replicas) report their own.
    """
    return os.environ["RECSYS_TEST_CELERY_WORKER"]


# --- Redis, PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker() -> Iterator[dict[str, str]]:
    """This session's corner of the Redis server: a key prefix and a queue name, cleaned up after."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.exceptions.RedisError as e:
        reason = (
            f"the Celery test needs a Redis server at {REDIS_URL} (the broker; {e}). Start one, e.g. "
            "`redis-server --port 6379 --bind 127.0.0.1 --save ''`, or set RECSYS_TEST_REDIS_URL"
        )
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI must run the Celery test: {reason}")
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:8]
    prefix = f"recsys-test-{tag}:"
    yield {"url": REDIS_URL, "prefix": prefix, "queue": f"recsys-test-{tag}", "tag": tag}
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        client.delete(key)
    client.close()


def _sqlalchemy_url(url: str) -> str:
    """A libpq URL as SQLAlchemy's (psycopg2) URL; a unix-socket host goes in the query, as libpq takes it."""
    from sqlalchemy.engine import URL

    p = parse_dsn(url)
    host, port = p.get("host"), p.get("port")
    socket_host = bool(host and host.startswith("/"))
    return URL.create(
        "postgresql+psycopg2",
        username=p.get("user"),
        password=p.get("password") or None,
        host=None if socket_host else host,
        port=None if socket_host or not port else int(port),
        database=p["dbname"],
        query={k: v for k, v in {"host": host, "port": port}.items() if v} if socket_host else {},
    ).render_as_string(hide_password=False)


@contextmanager
def _databases(server_url: str, *roles: str) -> Iterator[list[str]]:
    """A fresh database per role on the test server, dropped afterwards."""
    with ExitStack() as stack:
        yield [stack.enter_context(scratch_database(server_url, f"recsys_test_{role}")) for role in roles]


# --- processes ------------------------------------------------------------------------------------


class Stack:
    """Long-running Airflow processes, each in a process group of its own, with a log file each."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            self.procs[name] = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}:\n{self.log(name)[-4000:]}")

    def wait_for(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self.check_alive()
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n}\n{self.log(n)[-2000:]}" for n in self.procs)
                pytest.fail(f"{what}: not within {timeout:.0f} s\n{tails}")
            time.sleep(1)

    def stop(self) -> None:
        """SIGTERM to each group (Celery's warm shutdown), then SIGKILL to whatever is left."""
        for proc in self.procs.values():
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _base_env(home: Path, campaign_url: str, inbox: Path, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT_ROOT / "dags"),
        AIRFLOW_CONN_RECSYS_DB=airflow_connection(campaign_url),
        RECSYS_INBOX=str(inbox),
        RECSYS_DATA_DIR=str(data),
        RECSYS_NIGHTLY_RETRIES="0",
        RECSYS_INBOX_SETTLE_SECONDS="0",  # the files were copied in whole
        OMP_NUM_THREADS="1",
    )
    return env


def _inbox(shop: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for f in shop.glob("*.csv"):
        (folder / f.name).write_bytes(f.read_bytes())
    return folder


def _offers(url: str) -> list[tuple]:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"select {COMPARED} from recsys.campaign_offers order by campaign_date, user_id")  # noqa: S608
        return cur.fetchall()


# --- the test -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1500)  # about 5 minutes here; room for a loaded machine
def test_nightly_dag_on_celery_runs_shards_on_different_workers_and_matches_a_local_run(
    broker: dict[str, str], server_url: str, tmp_path: Path
) -> None:
    import datetime as dt

    from recsys.benchmark.synth.generate import generate_data

    night = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)  # the release is the local send time
    shop = tmp_path / "shop"
    generate_data(users=300, days=30, seed=11, out=shop, end_date=night)
    conf = {"campaign_date": night.isoformat(), "shards": SHARDS, "total_timesteps": 2048, "mode": "auto"}

    with _databases(server_url, "celery", "local", "airflow_celery") as (celery_db, local_db, metadata_db):
        # The reference, in-process (dag.test) in a database of its own, runs while the Celery
        # stack starts and runs: the two trainings take one core each.
        home = tmp_path / "airflow-local"
        date_and_conf = ["--date", f"{night.isoformat()}T02:00:00+00:00", "--conf", json.dumps(conf)]
        with (tmp_path / "reference.log").open("wb") as log:
            reference = subprocess.Popen(
                [PY, "-m", "recsys.orchestration.airflow_local", "--home", str(home), *date_and_conf],
                env=_base_env(home, local_db, _inbox(shop, tmp_path / "inbox-local"), tmp_path / "data-local"),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            inbox = _inbox(shop, tmp_path / "inbox-celery")
            run_id, instances = _run_on_celery(broker, metadata_db, celery_db, inbox, tmp_path, conf)
            reference.wait(timeout=900)
        finally:
            with suppress(ProcessLookupError):
                os.killpg(reference.pid, signal.SIGKILL)  # only left when the Celery run failed
            reference.wait()
        assert reference.returncode == 0, (tmp_path / "reference.log").read_text(errors="replace")[-4000:]

        assert {ti["state"] for ti in instances} == {"success"}, instances
        workers = {f"{name}-{broker['tag']}" for name in WORKERS}
        shards = {ti["map_index"]: ti["hostname"] for ti in instances if ti["task_id"] == "score"}
        timing = {
            ti["map_index"]: (ti["hostname"], str(ti["queued_dttm"]), str(ti["start_date"]), str(ti["end_date"]))
            for ti in instances
            if ti["task_id"] == "score"
        }
        print(f"score shards ran on {shards}; (worker, queued, started, ended): {timing}")
        assert sorted(shards) == list(range(SHARDS))
        assert len(set(shards.values())) == SHARDS, f"the score shards ran on {timing}"
        assert set(shards.values()) <= workers
        assert {ti["hostname"] for ti in instances} <= workers
        assert {ti["queue"] for ti in instances} == {broker["queue"]}

        celery_offers, local_offers = _offers(celery_db), _offers(local_db)
        assert len(celery_offers) > 50
        assert celery_offers == local_offers
        with connect(celery_db) as conn:
            run = fetch_all(conn, "select state, shard_count from recsys.campaign_runs where run_id = %s", (run_id,))
        assert run == [{"state": "published", "shard_count": SHARDS}]


def _run_on_celery(
    broker: dict[str, str], metadata_db: str, campaign_db: str, inbox: Path, tmp_path: Path, conf: dict
) -> tuple[str, list[dict]]:
    """Start the stack, trigger the nightly DAG, wait for its run; its run id and task instances."""
    home = tmp_path / "airflow-celery"
    port = _free_port()
    env = _base_env(home, campaign_db, inbox, tmp_path / "data-celery")
    env.update(
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=_sqlalchemy_url(metadata_db),
        # Triggered runs only: no cron run of either DAG joins in once they are unpaused.
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__API_AUTH__JWT_SECRET=uuid.uuid4().hex,
        AIRFLOW__CELERY__BROKER_URL=broker["url"],
        # as the compose profile: no broker prefetching, so a busy worker leaves the second shard
        # to an idle one
        AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS="recsys.orchestration.celery_config.CELERY_CONFIG",
        AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX=broker["prefix"],
        AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT="3600",
        AIRFLOW__OPERATORS__DEFAULT_QUEUE=broker["queue"],
        AIRFLOW__CELERY__WORKER_CONCURRENCY="1",  # one task per worker: two shards need two workers
    )
    _airflow(["db", "migrate"], env)
    stack = Stack(tmp_path)
    try:
        stack.start("api-server", [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port)], env)
        stack.start("scheduler", [AIRFLOW, "scheduler"], env)
        worker_env = {
            **env,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")])),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{Path(__file__).stem}.worker_hostname",
        }
        for name in WORKERS:
            hostname = f"{name}-{broker['tag']}"  # Celery's name and the one Airflow records
            command = [AIRFLOW, "celery", "worker", "--celery-hostname", hostname, "--queues", broker["queue"]]
            stack.start(name, [*command, *WORKER_OPTIONS], {**worker_env, "RECSYS_TEST_CELERY_WORKER": hostname})
        _airflow(["dags", "reserialize"], env)  # what the DAG processor would store
        stack.wait_for("the API server", lambda: _answers(f"http://127.0.0.1:{port}/api/v2/monitor/health"), 300)
        for name in WORKERS:
            stack.wait_for(f"{name} ready", lambda n=name: " ready." in stack.log(n), 300)
        run_id = f"celery__{broker['tag']}"
        _airflow(["dags", "trigger", "recsys_nightly", "--run-id", run_id, "--conf", json.dumps(conf)], env)
        stack.wait_for("the nightly run", lambda: _run_state(metadata_db, run_id) in ("success", "failed"), 900)
        with connect(metadata_db) as conn:
            instances = fetch_all(
                conn,
                "select task_id, map_index, state, hostname, queue, queued_dttm, start_date, end_date"
                " from task_instance where dag_id = 'recsys_nightly' and run_id = %s order by start_date",
                (run_id,),
            )
        return run_id, instances
    finally:
        stack.stop()


def _airflow(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"airflow {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def _run_state(metadata_db: str, run_id: str) -> str | None:
    with connect(metadata_db) as conn:
        return fetch_value(conn, "select state from dag_run where dag_id = 'recsys_nightly' and run_id = %s", (run_id,))
