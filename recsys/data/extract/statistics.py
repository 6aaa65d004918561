"""Statistics: a load analyzes the tables it changed by more rows than autovacuum's rule asks.

A bulk load followed at once by the night's features would otherwise be planned on the statistics
of the tables before it (none for a new shop's or a new month's), or on whatever autovacuum gathered
by then: nothing at all on a server where it is off. `recsys.data.extract` reads `changed_tables`
before its writes and calls `analyze_changed` after them, inside the load's transaction, so the
statistics become visible with the rows.
"""

from __future__ import annotations

import psycopg2.extensions
from psycopg2 import sql

from recsys.config.settings import Settings
from recsys.data.extract.sheets import sql_text

Changes = dict[tuple[str, str], tuple[int, float]]


def changed_tables(cur: psycopg2.extensions.cursor, settings: Settings) -> Changes:
    """Rows changed per (schema, table) not yet reported to the statistics, and the changes an
    analyze asks for (`sql/extract/changed_tables.sql`)."""
    cur.execute(sql_text(settings, "changed_tables"))
    return {(schema, table): (changed, after) for schema, table, changed, after in cur.fetchall()}


def analyze_changed(cur: psycopg2.extensions.cursor, settings: Settings, before: Changes) -> list[str]:
    """Analyze each table changed since `before` by more rows than autovacuum's rule asks for;
    the names of the tables analyzed.

    Only the load's own changes count (many small loads add up in autovacuum's count alone): an
    analyze inside a transaction leaves its changes in `n_mod_since_analyze`, which counts them
    again at the commit.
    """
    tables = sorted(
        name
        for name, (changed, after) in changed_tables(cur, settings).items()
        if changed - before.get(name, (0, 0.0))[0] > after
    )
    for name in tables:
        cur.execute(sql.SQL("analyze {}").format(sql.Identifier(*name)))
    return [table for _, table in tables]
