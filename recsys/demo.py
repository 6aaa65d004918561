"""`recsys demo` / `make demo`: the main job on a fresh machine, with no configuration.

Generates a sample shop (the synthetic generator), loads it into PostgreSQL through the real
extract, builds tonight's features in SQL and prints a summary. With `RECSYS_DATABASE_URL` unset,
it runs on the embedded PostgreSQL in a database of its own (`recsys_demo`, rebuilt each time so
the summary is reproducible); with it set, it uses that database as it is.
Later stages (training, scoring, the Airflow DAG) join this job as they are built.
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
STAGES = 5


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


def _seed_style_features(row: dict) -> str:
    """One user's state in the original project's sample-output format."""
    channels = {
        "email": row["email_responsiveness"],
        "sms": row["sms_responsiveness"],
        "push": row["push_responsiveness"],
    }
    return "\n".join(
        [
            f"State Features (user {row['user_id']}, segment {row['segment']}):",
            f"- Recency: {row['recency_days']:.2f} days",
            f"- Frequency: {row['frequency_sessions']} sessions",
            f"- Monetary Value: ${row['monetary_value']:,.2f}",
            f"- Engagement Score: {row['engagement_score']:.2f}",
            f"- Discount Sensitive: {'Yes' if row['discount_sensitivity'] > 0.5 else 'No'}"
            f" ({row['discount_sensitivity']:.2f})",
            f"- Free Shipping Preference: {row['free_shipping_preference']:.2f}",
            f"- Preferred Channel: {max(channels, key=channels.__getitem__)}",
            f"- Days Since Last Purchase: {row['days_since_last_purchase']:.1f}",
        ]
    )


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

    with _stage(5, "Summary"), connect(url) as conn:
        print(_indent(feature_summary(conn, today)))
        sample = fetch_all(
            conn,
            "select * from recsys.user_features where as_of = %s order by engagement_score desc, user_id limit 1",
            (today,),
        )
        if sample:
            print()
            print(_indent(_seed_style_features(sample[0])))
    print(
        "\nNext: `recsys features --as-of DATE`, `recsys extract --source FILE`; "
        f"the data is in {Path(out).resolve().parent}.",
        file=sys.stdout,
    )
    return 0


def _indent(text: str) -> str:
    return "\n".join("      " + line if line else line for line in text.splitlines())
