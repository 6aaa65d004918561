"""Databases at a previous release's head, for upgrade tests (test_upgrade.py and conftest.py)."""

from __future__ import annotations

from pathlib import Path

from recsys.config.settings import PROJECT_ROOT, load_settings
from recsys.db import connect
from recsys.db.migrate import migrate

RELEASES = PROJECT_ROOT / "tests" / "data" / "releases"
PREVIOUS_RELEASE = "0.1.0"
DATA_TABLES = (
    "load_log",
    "users",
    "behavior_events",
    "offer_history",
    "policy_models",
    "campaign_runs",
    "campaign_offers",
    "campaign_holdout",
    "offer_events",
    "consent_revocations",
)


def build_release_database(url: str, release: str, *, fill: bool = True) -> None:
    """Migrate the empty database at `url` with `release`'s frozen sql/ and load its data."""
    root = RELEASES / release
    settings = load_settings(env={}, database_url=url, sql_dir=root / "sql")
    with connect(url) as conn:
        migrate(conn, settings)
        if fill:
            with conn.cursor() as cur:
                cur.execute((root / "fill.sql").read_text(encoding="utf-8"))


def sql_before(target: Path, *migrations: str) -> Path:
    """Today's sql/ tree without `migrations` (a database built with it is at an earlier head), in
    `target`: its views are the previous release's, which read none of the tables those
    migrations add (today's views are re-applied by the upgrade itself)."""
    import shutil

    shutil.copytree(PROJECT_ROOT / "sql", target)
    for name in migrations:
        (target / "migrations" / name).unlink()
    shutil.rmtree(target / "views")
    shutil.copytree(RELEASES / PREVIOUS_RELEASE / "sql" / "views", target / "views")
    return target
