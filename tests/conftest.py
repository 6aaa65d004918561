"""Shared fixtures: a real PostgreSQL database, fresh for each test session.

The server is `RECSYS_TEST_DATABASE_URL` when set (CI points it at the machine's server), else the
embedded pgserver in `.pgdata-test/`. A database with a unique name is created for the session,
migrated once, and dropped at the end.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from psycopg2 import sql

from recsys.config.settings import PROJECT_ROOT, Settings, load_settings
from recsys.db import Connection, connect, embedded_url, scratch_database
from recsys.db.migrate import migrate

DATA_TABLES = (
    "load_rejects",
    "load_log",
    "behavior_events",
    "users",
    "offer_history",
    "user_features",
    "policy_models",
)


def _server_url() -> str:
    url = os.environ.get("RECSYS_TEST_DATABASE_URL")
    if url:
        return url
    return embedded_url(PROJECT_ROOT / ".pgdata-test")


def _scratch_database(server: str) -> AbstractContextManager[str]:
    return scratch_database(server, "recsys_test")


@pytest.fixture(scope="session")
def server_url() -> str:
    """URL of the PostgreSQL server the tests run on."""
    return _server_url()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """URL of a fresh database on the test server; dropped after the session."""
    with _scratch_database(server_url) as url:
        yield url


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A brand-new database with nothing in it, for this test only."""
    with _scratch_database(server_url) as url:
        yield url


@pytest.fixture(scope="session")
def migrated_url(database_url: str) -> str:
    """The session database with the schema applied.

    With `RECSYS_TEST_UPGRADE_FROM=<release>` the database is first built at that release's head
    (its frozen `sql/` under tests/data/releases/, no data), then migrated to today's: the tests
    then run on an upgraded schema rather than a fresh one.
    """
    release = os.environ.get("RECSYS_TEST_UPGRADE_FROM")
    if release:
        from upgrade_support import build_release_database

        build_release_database(database_url, release, fill=False)
    settings = load_settings(env={}, database_url=database_url)
    with connect(database_url) as conn:
        migrate(conn, settings)
    return database_url


@pytest.fixture
def settings(migrated_url: str, tmp_path: Path) -> Settings:
    """Settings pointing at the test database, with data and inbox in a temporary folder.

    Inbox files a test writes are complete at once: no settle time (RECSYS_INBOX_SETTLE_SECONDS).
    """
    return load_settings(
        env={}, database_url=migrated_url, data_dir=tmp_path, inbox=tmp_path / "inbox", inbox_settle_seconds=0
    )


@pytest.fixture
def db(migrated_url: str) -> Iterator[Connection]:
    """A connection to the test database whose data tables start empty (schema kept)."""
    with connect(migrated_url) as conn:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("truncate {} restart identity cascade").format(
                    sql.SQL(", ").join(sql.Identifier("recsys", t) for t in DATA_TABLES)
                )
            )
        conn.commit()
        yield conn


@pytest.fixture
def cdb(migrated_url: str) -> Iterator[Connection]:
    """A connection to the test database whose campaign tables and users start empty
    (sender_support.reset: the sender, feedback and campaign-summary tests)."""
    from sender_support import reset

    with connect(migrated_url) as conn:
        reset(conn)
        yield conn


TRAINING_SHOP_END = dt.date(2026, 10, 1)
"""The day after the training shop's data: the night the training tests learn on."""


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated shop (600 users, the 30 days before TRAINING_SHOP_END), once per module.
    Modules that need another shop define a `shop` fixture of their own."""
    from recsys.benchmark.synth.generate import generate_data

    out = tmp_path_factory.mktemp("shop") / "shop"
    generate_data(users=600, days=30, seed=5, out=out, end_date=TRAINING_SHOP_END)
    return out


@pytest.fixture
def loaded(db: Connection, settings: Settings, shop: Path) -> Connection:
    """The test database with `shop` extracted and its features built as of TRAINING_SHOP_END."""
    from recsys.data.extract import extract_path
    from recsys.data.features import build_features

    extract_path(db, settings, shop, reference_at=dt.datetime.combine(TRAINING_SHOP_END, dt.time(), dt.UTC))
    build_features(db, settings, TRAINING_SHOP_END)
    return db


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Silence the embedded server's exit-time log lines: they run after pytest has closed the
    streams its handlers write to, and would print tracebacks under a passing run."""
    import logging

    logging.getLogger("pgserver").disabled = True
