"""The campaign stage's SQL: sql/campaign/<name>.sql loaded by name, identifiers composed in.

Every module of the campaign stage (load, runs, write, publish) reads its statements through these.
"""

from __future__ import annotations

from pathlib import Path

from psycopg2 import sql

from recsys.db.sqlfiles import load_sql


def campaign_sql(sql_dir: Path, name: str) -> str:
    """The text of sql/campaign/<name>.sql."""
    return load_sql(sql_dir, f"campaign/{name}")


def composed(sql_dir: Path, name: str, **identifiers: sql.Composable) -> sql.Composed:
    """sql/campaign/<name>.sql with its {placeholders} filled by identifiers (or composed SQL)."""
    return sql.SQL(campaign_sql(sql_dir, name)).format(**identifiers)
