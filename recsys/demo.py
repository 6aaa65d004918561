"""`recsys demo` / `make demo`: the main job on a fresh machine, with no configuration.

Generates a sample shop (the synthetic generator) into a demo inbox, prepares PostgreSQL and a
local Airflow metadata database (`.airflow/`, SQLite), then runs the real `recsys_nightly` DAG
once in this process with `dag.test()`: migrations, extract, feedback, features, PPO training
through the gate, evaluation, sharded scoring, publishing and the report. It ends with a summary
of tonight's offers, the champion's evaluation against the generator's hidden truth and one
recommendation in the original project's format. With `RECSYS_DATABASE_URL` unset it runs on the
embedded PostgreSQL in a database of its own (`recsys_demo`, rebuilt each time so the summary is
reproducible); with it set, it uses that database as it is.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from psycopg2 import sql

from recsys.config import load_config
from recsys.config.settings import PROJECT_ROOT, Settings, load_settings
from recsys.db import airflow_connection, connect, create_database, database_url, fetch_all, redact
from recsys.errors import RecsysError

DEMO_DATABASE = "recsys_demo"
AIRFLOW_HOME = PROJECT_ROOT / ".airflow"
STAGES = 5
NIGHTLY_TASKS = 9


@contextmanager
def _stage(number: int, title: str, out: TextIO, times: dict[str, float], name: str) -> Iterator[None]:
    print(f"[{number}/{STAGES}] {title} ...", file=out, flush=True)
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    times[name] = seconds
    print(f"      done in {seconds:.1f} s", file=out, flush=True)


def _demo_database(settings: Settings) -> str:
    """The URL to run the demo on: the configured database, or a fresh embedded one."""
    if settings.database_url:
        return settings.database_url
    return create_database(database_url(settings), DEMO_DATABASE, replace=True)


@contextmanager
def _quiet_fds(log_path: Path) -> Iterator[TextIO]:
    """Send everything written to stdout and stderr (Airflow's task logs) to `log_path`; yield a
    stream to the real terminal for the progress display."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    with open(log_path, "a", buffering=1) as log_file:
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()


@contextmanager
def _one_demo_at_a_time() -> Iterator[None]:
    """Hold the checkout's demo lock (`.airflow/demo.lock`) for the run: two demos in one checkout
    would overwrite each other's sample, inbox, Airflow metadata and demo database. Refuses at once,
    before anything is written, when another demo holds it; the lock goes with the process."""
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    with open(AIRFLOW_HOME / "demo.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RecsysError(
                f"another `recsys demo` is running in this checkout (it holds {AIRFLOW_HOME / 'demo.lock'}): "
                "wait for it to finish, or run the demo from another copy of the project"
            ) from None
        yield


def run_demo(*, users: int = 2000, days: int = 60, seed: int = 7, timesteps: int = 60_000, shards: int = 2) -> int:
    """Generate a sample shop, load it, run the nightly DAG on it and show the result (module docstring)."""
    with _one_demo_at_a_time():
        return _run_demo(users=users, days=days, seed=seed, timesteps=timesteps, shards=shards)


def _run_demo(*, users: int, days: int, seed: int, timesteps: int, shards: int) -> int:
    # The stages' own log lines would repeat what the progress display says.
    logging.getLogger("recsys").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")  # no login session: harmless
    settings = load_settings()
    out = sys.stdout
    times: dict[str, float] = {}
    today = dt.datetime.now(dt.UTC).date()
    sample = settings.data_dir / "sample.xlsx"
    inbox = settings.data_dir / "demo" / "inbox"
    started = time.perf_counter()

    title = f"Generating a sample shop: {users:,} users, {days} days of behaviour up to {today}"
    with _stage(1, title, out, times, "data"):
        from recsys.benchmark.synth.generate import generate_data

        sample.parent.mkdir(parents=True, exist_ok=True)
        summary = generate_data(users=users, days=days, seed=seed, out=sample, end_date=today)
        print(_indent(summary.format_report()))
        if inbox.exists():
            shutil.rmtree(inbox)
        inbox.mkdir(parents=True)
        shutil.copy2(sample, inbox / sample.name)
        print(f"      dropped {sample.name} into the inbox {inbox}")

    with _stage(2, "Preparing PostgreSQL and the Airflow metadata database", out, times, "databases"):
        url, log_path = _prepare_databases(settings, inbox)

    conf = {"mode": "auto", "total_timesteps": timesteps, "shards": shards}
    title = f"Running the recsys_nightly DAG for {today} (dag.test, params {json.dumps(conf)})"
    with _stage(3, title, out, times, "nightly DAG"):
        run = _run_nightly(conf, log_path)
        if run["state"] != "success":
            failed = [t["task_id"] for t in run["tasks"] if t["state"] not in ("success", "skipped")]
            print(f"      the run ended {run['state']} (tasks not done: {', '.join(failed)}); see {log_path}")
            return 1
        print(f"      run {run['run_id']}: success; Airflow's task logs are in {log_path}")

    with _stage(4, "Tonight's users and campaign", out, times, "summary"), connect(url) as conn:
        from recsys.data.features import feature_summary

        print(_indent(feature_summary(conn, today)))
        print()
        print(_indent(campaign_summary(conn, run["run_id"])))

    title = "Evaluating the champion against the generator's hidden truth"
    with _stage(5, title, out, times, "truth"), connect(url) as conn:
        _show_truth_and_a_recommendation(conn, today, summary.truth_path)

    total = time.perf_counter() - started
    print("\nTime per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()) + f"; total {total:.1f} s")
    print(
        "Next: `make airflow` (the Airflow UI with these DAGs), `recsys evaluate --truth data/sample.truth.npz`, "
        "`recsys recommend --user-id N`; "
        f"the data is in {Path(sample).resolve().parent}."
    )
    return 0


def _prepare_databases(settings: Settings, inbox: Path) -> tuple[str, Path]:
    """The demo's campaign database and Airflow's metadata database; returns the campaign
    database's URL and the (emptied) file Airflow's output of the run goes to."""
    url = _demo_database(settings)
    where = "embedded server" if not settings.database_url else "RECSYS_DATABASE_URL"
    print(f"      campaign database: {redact(url)} ({where})")
    from recsys.orchestration import airflow_local

    airflow_local.configure(AIRFLOW_HOME)
    os.environ.update(
        {
            "AIRFLOW_CONN_RECSYS_DB": airflow_connection(url),
            "RECSYS_INBOX": str(inbox),
            "RECSYS_NIGHTLY_RETRIES": "0",  # a demo shows a failure at once
            "RECSYS_INBOX_SETTLE_SECONDS": "0",  # the demo dropped its sample whole
        }
    )
    log_path = AIRFLOW_HOME / "demo-run.log"
    log_path.write_text("")
    with _quiet_fds(log_path):
        migrated = airflow_local.ensure_metadata(AIRFLOW_HOME)
    print(f"      Airflow metadata: {AIRFLOW_HOME}/airflow.db ({'created' if migrated else 'up to date'})")
    return url, log_path


def _show_truth_and_a_recommendation(conn: Any, today: dt.date, truth_path: Path) -> None:
    """The champion's evaluation against the generator's hidden truth, and the recommendation for
    the most engaged user."""
    from recsys.benchmark.truth_eval import evaluate_model_against_truth
    from recsys.evaluation.model_eval import evaluate_model

    config = load_config(load_settings().config)
    evaluation = evaluate_model(conn, config, as_of=today, n_boot=100)
    truth_eval = evaluate_model_against_truth(conn, config.catalog, evaluation, truth_path, n_boot=100).truth_eval
    assert truth_eval is not None
    print(_indent(truth_eval.table()))
    top = fetch_all(
        conn,
        "select user_id from recsys.user_features where as_of = %s order by engagement_score desc, user_id limit 1",
        (today,),
    )
    if top:
        from recsys.campaign.recommend import recommend

        print()
        print(_indent(recommend(conn, config.catalog, user_id=int(top[0]["user_id"]), as_of=today).format()))


def _run_nightly(conf: dict[str, Any], log_path: Path) -> dict[str, Any]:
    """Run the DAG in this process, Airflow's output to `log_path`, a line per task to the terminal."""
    from recsys.orchestration import airflow_local, pipeline

    with _quiet_fds(log_path) as terminal:
        clock: dict[str, float] = {}

        def progress(task: str, event: str, result: dict[str, Any] | None) -> None:
            if event == "start":
                clock[task] = time.perf_counter()
                return
            seconds = time.perf_counter() - clock.get(task, time.perf_counter())
            print(f"      {task:<16} {seconds:6.1f} s  {_headline(task, result or {})}", file=terminal, flush=True)

        remove = pipeline.add_listener(progress)
        try:
            dag = airflow_local.load_dag("recsys_nightly")
            dag_run = dag.test(logical_date=dt.datetime.now(dt.UTC), run_conf=conf)
            return {
                "run_id": dag_run.run_id,
                "state": str(dag_run.state),
                "tasks": airflow_local.task_instances(dag_run),
            }
        finally:
            remove()


def _headline(task: str, r: dict[str, Any]) -> str:
    """One line of what a task did, for the progress display."""
    if task == "extract":
        return f"{len(r.get('files', []))} file(s), {r.get('rows_loaded', 0):,} rows loaded"
    if task == "features":
        return f"{r.get('users', 0):,} users as of {r.get('as_of')}"
    if task == "train":
        steps = f"{r.get('total_timesteps', 0):,} steps"
        return f"model {r.get('model_version')} ({r.get('mode')}, {steps}): {r.get('decision')}"
    if task == "evaluate":
        value = r.get("simulator_value")
        return f"champion {r.get('model_version')}: simulator value {value:.4f}" if value is not None else ""
    if task == "score":
        shown = ("users", "eligible", "offers", "rests", "holdout", "exploration")
        return f"shard {r.get('shard')}: " + ", ".join(f"{k} {r[k]:,}" for k in shown if k in r)
    if task == "publish":
        return "published" if r.get("published", True) else "not published (dry run)"
    if task == "report":
        return f"state {r.get('state')}, offers {sum(r.get('offers_by_channel', {}).values()):,}"
    if task == "migrate":
        return str(r.get("summary", ""))
    return ""


def campaign_summary(conn: Any, run_id: str) -> str:
    """Offers of a run by channel, offer type and timing, and the scheduled-time range, in words."""
    lines: list[str] = []
    total = fetch_all(
        conn,
        "select count(*) as n, min(scheduled_at) as first, max(scheduled_at) as last, count(distinct user_id) as users"
        " from recsys.campaign_offers where run_id = %s",
        (run_id,),
    )[0]
    lines.append(f"{total['n']:,} offers for {total['users']:,} users (one per user)")
    for column in ("channel", "offer_type", "timing"):
        rows = fetch_all(
            conn,
            sql.SQL(
                "select {c} as k, count(*) as n from recsys.campaign_offers"
                " where run_id = %s group by 1 order by 2 desc"
            ).format(c=sql.Identifier(column)),
            (run_id,),
        )
        lines.append(f"by {column.replace('_', ' ')}: " + ", ".join(f"{r['k']} {r['n']:,}" for r in rows))
    if total["first"] is not None:
        lines.append(f"scheduled from {total['first']:%Y-%m-%d %H:%M} to {total['last']:%Y-%m-%d %H:%M} UTC")
    holdout = fetch_all(conn, "select count(*) as n from recsys.campaign_holdout where run_id = %s", (run_id,))[0]
    lines.append(f"control group (no offer): {holdout['n']:,} users")
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("      " + line if line else line for line in text.splitlines())
