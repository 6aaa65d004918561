"""Helpers for test modules that load a generated shop into the session database."""

from __future__ import annotations

from psycopg2 import sql

from recsys.data.features import feature_partitions
from recsys.db import Connection

SHOP_TABLES = ("load_rejects", "load_log", "behavior_events", "users", "offer_history", "user_features")
"""The tables a generated shop's extract and feature builds write."""


def clear_shop(conn: Connection) -> None:
    """Empty the shop's tables and drop the feature partitions, so a module's shop starts alone."""
    with conn.cursor() as cur:
        for name in feature_partitions(conn):
            cur.execute(sql.SQL("drop table {}").format(sql.Identifier("recsys", name)))
        cur.execute(
            sql.SQL("truncate {} restart identity cascade").format(
                sql.SQL(", ").join(sql.Identifier("recsys", t) for t in SHOP_TABLES)
            )
        )
    conn.commit()
