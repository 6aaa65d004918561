"""The nightly run of a simulated night: the DAG through `dag.test()` in a child process, or its
stages called in this process."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from recsys.config.settings import PROJECT_ROOT, Settings
from recsys.db import airflow_connection
from recsys.errors import RecsysError


def run_night_in_process(
    settings: Settings, night: dt.date, *, timesteps: int, seed: int, shards: int, frequency_cap: int | None = None
) -> None:
    """The nightly DAG's tasks for campaign date `night`, in its order, called in this process
    (`frequency_cap`: the DAG param of the same name)."""
    from recsys.orchestration import pipeline

    run_id = f"simulate__{night.isoformat()}"
    tasks: dict[str, Any] = {
        "migrate": pipeline.migrate(settings),
        "extract": pipeline.extract(settings, night),
        "ingest_feedback": pipeline.ingest_feedback(settings, night),
        "features": pipeline.build_features(settings, night),
        "train": pipeline.train(
            settings, night, mode="auto", total_timesteps=timesteps, seed=seed, frequency_cap=frequency_cap
        ),
        "evaluate": pipeline.evaluate(settings, night, frequency_cap=frequency_cap),
    }
    tasks["score"] = [
        pipeline.score_shard(settings, night, run_id=run_id, shard=k, shards=shards, frequency_cap=frequency_cap)
        for k in pipeline.shard_list(shards)
    ]
    tasks["publish"] = pipeline.publish(settings, run_id)
    pipeline.report(settings, run_id, night, tasks=tasks)


class DagRunner:
    """Runs `dags/recsys_nightly.py` once per night through `dag.test()`, in a child process.

    The child (`python -m recsys.orchestration.airflow_local`) gets its own `AIRFLOW_HOME` (SQLite metadata under
    the output folder, migrated on the first night) and the simulation database as the `recsys_db`
    connection, so a user's own Airflow is never touched; a fresh process per night keeps Airflow's
    global state out of the simulator.
    """

    def __init__(self, settings: Settings, url: str, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "RECSYS_DATABASE_URL": url,
            "RECSYS_DATA_DIR": str(settings.data_dir),
            "RECSYS_INBOX": str(settings.inbox),
            "RECSYS_NIGHTLY_RETRIES": "0",
            "RECSYS_INBOX_SETTLE_SECONDS": "0",  # the simulator writes the inbox files whole
            "OMP_NUM_THREADS": "1",
        }
        self.env.pop("AIRFLOW_HOME", None)
        # The DAG reads the `recsys_db` connection first: point it at the simulation database (a
        # user's own connection must never be used), unix-socket servers included.
        self.env["AIRFLOW_CONN_RECSYS_DB"] = airflow_connection(url)

    def run(
        self, night: dt.date, *, timesteps: int, seed: int, shards: int, frequency_cap: int | None = None
    ) -> dict[str, Any]:
        """One DAG run for the night; its task instances (state, seconds). `seed`: the DAG's own."""
        conf = {
            "campaign_date": night.isoformat(),
            "mode": "auto",
            "total_timesteps": timesteps,
            "shards": shards,
            "frequency_cap": frequency_cap,
        }
        cmd = [
            sys.executable,
            "-m",
            "recsys.orchestration.airflow_local",
            "--home",
            str(self.home),
            "--date",
            f"{night.isoformat()}T02:00:00+00:00",
            "--conf",
            json.dumps(conf),
            "recsys_nightly",
        ]
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, cwd=PROJECT_ROOT)
        log_path = self.home / "simulate.log"
        with open(log_path, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{out.stdout}\n{out.stderr}\n")
        result = next((line[7:] for line in out.stdout.splitlines() if line.startswith("RESULT ")), None)
        if out.returncode != 0 or result is None:
            tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RecsysError(
                f"the recsys_nightly DAG run for {night} failed (exit {out.returncode}): {tail[0]} (log: {log_path})"
            )
        return json.loads(result)
