"""`recsys demo` / `make demo`: the main job on a fresh machine, with no configuration.

Generates a sample shop (the synthetic generator), loads it into PostgreSQL through the real
extract, builds tonight's features in SQL, trains PPO (gate and registry included), evaluates the
champion against the generator's hidden truth and prints a summary with one recommendation in the
original project's format. With `RECSYS_DATABASE_URL` unset,
it runs on the embedded PostgreSQL in a database of its own (`recsys_demo`, rebuilt each time so
the summary is reproducible); with it set, it uses that database as it is.
Scoring, campaigns and the Airflow DAG join this job as they are built.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from recsys.db import connect, database_url, fetch_all, redact
from recsys.settings import Settings, load_settings

DEMO_DATABASE = "recsys_demo"
STAGES = 7


@contextmanager
def _stage(number: int, title: str) -> Iterator[None]:
    print(f"[{number}/{STAGES}] {title} ...", flush=True)
    started = time.perf_counter()
    yield
    print(f"      done in {time.perf_counter() - started:.1f} s", flush=True)


def _demo_database(settings: Settings) -> str:
    """The URL to run the demo on: the configured database, or a fresh embedded one."""
    if settings.database_url:
        return settings.database_url
    server = database_url(settings)
    admin = psycopg2.connect(server)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(DEMO_DATABASE)))
            cur.execute(sql.SQL("create database {}").format(sql.Identifier(DEMO_DATABASE)))
    finally:
        admin.close()
    params = parse_dsn(server)
    params["dbname"] = DEMO_DATABASE
    return make_dsn(**params)


def run_demo(*, users: int = 2000, days: int = 60, seed: int = 7) -> int:
    from recsys.extract import extract_path
    from recsys.features import build_features, feature_summary
    from recsys.migrate import migrate
    from recsys.synth.generate import generate_data

    # The stages' own log lines would repeat what the progress display says.
    logging.getLogger("recsys").setLevel(logging.WARNING)
    settings = load_settings()
    today = dt.datetime.now(dt.UTC).date()
    out = settings.data_dir / "sample.xlsx"
    out.parent.mkdir(parents=True, exist_ok=True)

    with _stage(1, f"Generating a sample shop: {users:,} users, {days} days of behaviour up to {today}"):
        summary = generate_data(users=users, days=days, seed=seed, out=out, end_date=today)
        print(_indent(summary.format_report()))

    with _stage(2, "Preparing PostgreSQL and applying migrations"):
        url = _demo_database(settings)
        where = "embedded server" if not settings.database_url else "RECSYS_DATABASE_URL"
        print(f"      database: {redact(url)} ({where})")
        with connect(url) as conn:
            print(f"      {migrate(conn, settings).summary()}")

    with _stage(3, f"Extracting {out.name} (validated COPY load)"), connect(url) as conn:
        for result in extract_path(conn, settings, out):
            print(f"      {result.describe()}")
            if result.status == "refused":
                return 1

    with _stage(4, f"Building features as of {today} in SQL"), connect(url) as conn:
        print(f"      {build_features(conn, settings, today).describe()}")

    with _stage(5, "Training PPO (retrain or fine-tune), gate, registry"), connect(url) as conn:
        from recsys.train import TrainConfig, train

        result = train(conn, settings, as_of=today, config=TrainConfig(total_timesteps=60_000, seed=seed))
        print(_indent(result.describe()))

    with _stage(6, "Evaluating against the generator's hidden truth"), connect(url) as conn:
        from recsys.model_eval import evaluate_model

        evaluation = evaluate_model(conn, as_of=today, truth_path=summary.truth_path, n_boot=100)
        print(_indent(evaluation.truth_eval.table()))

    with _stage(7, "Summary"), connect(url) as conn:
        print(_indent(feature_summary(conn, today)))
        sample = fetch_all(
            conn,
            "select * from recsys.user_features where as_of = %s order by engagement_score desc, user_id limit 1",
            (today,),
        )
        if sample:
            from recsys.recommend import recommend

            print()
            print(_indent(recommend(conn, user_id=int(sample[0]["user_id"]), as_of=today).format()))
    print(
        "\nNext: `recsys evaluate --truth data/sample.truth.npz`, `recsys recommend --user-id N`, "
        "`recsys train --mode fine_tune`; "
        f"the data is in {Path(out).resolve().parent}.",
        file=sys.stdout,
    )
    return 0


def _indent(text: str) -> str:
    return "\n".join("      " + line if line else line for line in text.splitlines())
