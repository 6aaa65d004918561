"""Run a recsys DAG once, in this process, with Airflow metadata in a local folder.

`recsys demo`, the DAG tests and `bench/bench_nightly.py` run the real `recsys_nightly` DAG through
`dag.test()`: no scheduler, API server or workers, but the real task code, XComs, dynamic task
mapping and params. Airflow reads its configuration when it is first imported, so `configure()`
must run before anything imports `airflow`; `run_dag()` does both, migrating the metadata database
once per folder (`airflow db migrate` done programmatically).

Also a command, for a clean process per run (tests, benchmarks):
`python -m recsys.orchestration.airflow_local --home H [--metadata URL] [--date D] [--conf JSON] [DAG_ID]`
prints one JSON line with the run's state and its task instances; `--standalone` (`make airflow`)
runs `airflow standalone` with the same configuration until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from recsys.config.settings import package_dir
from recsys.errors import RecsysError

# The demo and the simulation run the project's own DAG file in-process: the one place outside
# Airflow's DAG processor that loads dags/ (shipped inside the package, see pyproject.toml).
DAGS_FOLDER = package_dir("dags")
PLUGINS_FOLDER = package_dir("plugins")


def configure(home: Path, metadata_url: str | None = None) -> dict[str, str]:
    """Point Airflow at `home` (SQLite metadata in it unless `metadata_url`), this project's DAGs
    and plugins, and a small machine's parallelism. Returns the variables set."""
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != str(home):
        raise RecsysError("Airflow was imported before its home folder was configured; run this in a fresh process")
    home.mkdir(parents=True, exist_ok=True)
    values = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url or f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
        "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "False",
    }
    os.environ.update(values)
    return values


def ensure_metadata(home: Path) -> bool:
    """Create or upgrade the metadata database once (a marker per Airflow version and database).

    Returns True when it migrated now."""
    import airflow
    from airflow.utils import db

    marker = home / ".recsys-metadata-migrated"
    stamp = f"{airflow.__version__} {os.environ['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']}"
    if marker.exists() and marker.read_text() == stamp:
        return False
    db.initdb()
    marker.write_text(stamp)
    return True


def load_dag(dag_id: str) -> Any:
    """The DAG object from this project's `dags/` folder, failing on any import error."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        raise RecsysError(f"DAG files do not import: {bag.import_errors}")
    dag = bag.dags.get(dag_id)
    if dag is None:
        raise RecsysError(f"no DAG {dag_id!r} in {DAGS_FOLDER}")
    # For dag.test(): Airflow 3.3.2's fails a DAG with a deadline alert once the run succeeds (it
    # looks the alerts up by id, but its DAG holds their definitions; the scheduler's holds ids).
    # A one-off in-process run has no deadline to watch, so it runs without one.
    dag.deadline = None
    return dag


def run_dag(
    dag_id: str,
    *,
    home: Path,
    metadata_url: str | None = None,
    logical_date: dt.datetime | None = None,
    conf: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run `dag_id` once with `dag.test()`; the run's state and its task instances' states and seconds."""
    configure(home, metadata_url)
    started = time.perf_counter()
    ensure_metadata(home)
    migrate_seconds = time.perf_counter() - started
    dag = load_dag(dag_id)
    logical_date = logical_date or dt.datetime.now(dt.UTC)
    run = dag.test(logical_date=logical_date, run_conf=conf or {})
    return {
        "dag_id": dag_id,
        "run_id": run.run_id,
        "state": str(run.state),
        "metadata_seconds": round(migrate_seconds, 1),
        "tasks": task_instances(run),
    }


def task_instances(run: Any) -> list[dict[str, Any]]:
    """task_id, map_index, state and seconds of each task instance of a finished run."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)
            .order_by(TaskInstance.start_date)
            .all()
        )
        return [
            {
                "task_id": ti.task_id,
                "map_index": ti.map_index,
                "state": str(ti.state),
                "seconds": round(ti.duration or 0.0, 2),
            }
            for ti in rows
        ]


def standalone(home: Path) -> int:
    """`airflow standalone` on this project's DAGs and plugins until Ctrl-C, then stop all of it.

    Airflow runs in a session of its own, so the terminal's Ctrl-C reaches only this process,
    which then sends SIGINT to Airflow's whole process group (SIGTERM would leave the scheduler and
    its workers running), a second one if the scheduler is still draining, and SIGKILL to whatever
    is left after a minute.
    """
    env = {**os.environ, **configure(home), "AIRFLOW__API__WORKERS": "1", "OMP_NUM_THREADS": "1"}
    env["AIRFLOW__SCHEDULER__PARSING_PROCESSES"] = "1"
    airflow = Path(sys.executable).with_name("airflow")
    env["PATH"] = f"{airflow.parent}{os.pathsep}{env.get('PATH', '')}"  # standalone starts `airflow ...` by name
    print(
        "Airflow UI: http://localhost:8080 (user admin; the password is in "
        f"{home / 'simple_auth_manager_passwords.json.generated'} once it has started, ~30-60 s)\n"
        "Campaign database: the `recsys_db` connection, else RECSYS_DATABASE_URL, else the embedded server. "
        "New DAGs start paused: unpause them in the UI. Ctrl-C stops everything.",
        flush=True,
    )
    proc = subprocess.Popen([str(airflow), "standalone"], env=env, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        print("\nstopping Airflow ...", flush=True)
        for _ in range(2):  # the scheduler may need a second SIGINT while it drains
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                continue
        time.sleep(2)  # the group's last workers exit after their parent
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recsys.orchestration.airflow_local", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("dag_id", nargs="?", default="recsys_nightly")
    parser.add_argument("--home", required=True, help="AIRFLOW_HOME for this run (metadata, logs)")
    parser.add_argument("--standalone", action="store_true", help="run `airflow standalone` until Ctrl-C")
    parser.add_argument("--metadata", default=None, help="SQLAlchemy URL of the metadata DB (default SQLite in --home)")
    parser.add_argument("--date", default=None, help="logical date, ISO 8601 (default now)")
    parser.add_argument("--conf", default="{}", help="run conf (the DAG's params) as JSON")
    args = parser.parse_args(argv)
    if args.standalone:
        return standalone(Path(args.home).resolve())
    logical = None
    if args.date:
        logical = dt.datetime.fromisoformat(args.date)
        logical = logical if logical.tzinfo else logical.replace(tzinfo=dt.UTC)
    result = run_dag(
        args.dag_id, home=Path(args.home), metadata_url=args.metadata, logical_date=logical, conf=json.loads(args.conf)
    )
    result["peak_rss_bytes"] = peak_rss_bytes()
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if result["state"] == "success" else 1


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes: VmHWM of /proc/self/status on Linux.

    Not `ru_maxrss`: Linux carries the parent's high-water mark over a fork and exec into the
    child's, so a child started by a bigger parent (a benchmark that generated its data first)
    would report the parent's peak, not its own. 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
