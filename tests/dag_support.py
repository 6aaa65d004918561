"""Running the Airflow DAGs in tests (test_dags.py, test_night_refusals.py).

Airflow reads its configuration when first imported, so every Airflow run happens in a child
process with its own `AIRFLOW_HOME` (metadata in a scratch database on the test server); the
campaign database is a database of its own, reached as the connection `recsys_db`. The fixtures
are imported by the test modules that use them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg2.extensions import parse_dsn

from recsys.config.settings import PROJECT_ROOT
from recsys.db import airflow_connection, scratch_database

PY = sys.executable


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without Airflow or recsys settings, for an Airflow home `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "OMP_NUM_THREADS": "1",
            **extra,
        }
    )
    return env


def result_of(proc: subprocess.CompletedProcess[str]) -> dict:
    """The JSON a child process printed on its last `RESULT ` line."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1].removeprefix("RESULT "))


def airflow_local(home: Path, *args: str, metadata: str | None = None) -> list[str]:
    """The command that runs a DAG once with `dag.test()` (recsys.orchestration.airflow_local)."""
    command = [PY, "-m", "recsys.orchestration.airflow_local", *args, "--home", str(home)]
    return command + (["--metadata", metadata] if metadata else [])


def nightly_command(tmp_path: Path, metadata: str, night: dt.date, conf: dict[str, Any]) -> list[str]:
    """The nightly DAG for `night` (logical date 02:00 UTC) with the params `conf`."""
    date = f"{night.isoformat()}T02:00:00+00:00"
    return airflow_local(tmp_path / "airflow", "--date", date, "--conf", json.dumps(conf), metadata=metadata)


def nightly_env(tmp_path: Path, campaign_db: str, inbox: Path, *, retries: int) -> dict[str, str]:
    """A nightly run's environment: `campaign_db` as recsys_db, the inbox `inbox` (its files taken
    at once: they were copied in whole), data under `tmp_path/data`, `retries` per task."""
    return airflow_env(
        tmp_path / "airflow",
        AIRFLOW_CONN_RECSYS_DB=airflow_connection(campaign_db),
        RECSYS_INBOX=str(inbox),
        RECSYS_DATA_DIR=str(tmp_path / "data"),
        RECSYS_NIGHTLY_RETRIES=str(retries),
        RECSYS_INBOX_SETTLE_SECONDS="0",
    )


def run_dag(command: list[str], env: dict[str, str], timeout: int = 900) -> dict:
    """Run `command` and return its result (the run's state, run id and tasks)."""
    return result_of(subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout))


def shop_inbox(tmp_path: Path, night: dt.date, *, users: int, seed: int) -> tuple[Path, Path]:
    """A synthetic shop's 30 days up to `night` (`tmp_path/shop`) and an inbox holding a copy of
    its CSV files (`tmp_path/inbox`)."""
    from recsys.benchmark.synth.generate import generate_data

    shop = tmp_path / "shop"
    generate_data(users=users, days=30, seed=seed, out=shop, end_date=night)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for f in shop.glob("*.csv"):
        (inbox / f.name).write_bytes(f.read_bytes())
    return shop, inbox


@pytest.fixture(scope="module")
def airflow_metadata(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scratch PostgreSQL database for Airflow's metadata (SQLite when the server is a socket)."""
    params = parse_dsn(server_url)
    if str(params.get("host", "")).startswith("/"):
        yield f"sqlite:///{tmp_path_factory.mktemp('airflow-meta') / 'airflow.db'}"
        return
    with scratch_database(server_url, "recsys_test_airflow") as url:
        p = parse_dsn(url)
        auth = p.get("user", "postgres") + (f":{p['password']}" if p.get("password") else "")
        yield f"postgresql+psycopg2://{auth}@{p.get('host', 'localhost')}:{p.get('port', '5432')}/{p['dbname']}"


@pytest.fixture(scope="module")
def campaign_db(server_url: str) -> Iterator[str]:
    """A database of its own for the nightly runs (the DAG's migrate task creates the schema)."""
    with scratch_database(server_url, "recsys_test_nightly") as url:
        yield url
