"""Refusals: when a sheet's rejects refuse its file, the message that says why and what to change,
the `load_log` record of a refused file, and the night's refusals for the report.

Called by `recsys.data.extract` (loads) and `recsys.orchestration.pipeline` (`night_refusals`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import psycopg2

from recsys.config.settings import Settings
from recsys.data.extract.sheets import SheetCounts, classify, sql_text
from recsys.db import Connection, fetch_all, fetch_value

# RECSYS_MAX_REJECT_RATE applies to sheets of at least this many rows: in a handful of rows (a
# daily delta, a hand-made fix) one or two typos are a large share by chance, not a broken export.
# A sheet whose rows are all rejected is refused whatever its size.
RATE_MIN_ROWS = 100


def too_many_rejects(counts: SheetCounts, settings: Settings) -> bool:
    """All rows rejected, or (in a sheet of RATE_MIN_ROWS rows or more) more than the allowed share."""
    if counts.read == 0 or counts.rejected == 0:
        return False
    if counts.rejected == counts.read:
        return True
    return counts.read >= RATE_MIN_ROWS and counts.rejected > settings.max_reject_rate * counts.read


FORMULA_REASON = "formula cell: values must be literal"
# How sql/extract/users_check.sql ends the reason of a field dropped from a user row (the row kept).
DROPPED_FIELD_REASON_END = "dropped, the user loaded"
# What to change when most of a file's rows fail for one reason: keyed by the start of the reason
# as sql/extract/*_check.sql words it.
REJECT_HINTS = {
    "timestamp is older than the event retention window": "raise RECSYS_EVENT_RETENTION_DAYS to load this backfill",
    "timestamp is in the future": "the rows are later than the load's reference time (the night's 00:00 UTC, "
    "or --reference-time): check the time zone of the timestamps, or load the file on a later night",
    "expected an ISO 8601 timestamp": "write timestamps as ISO 8601, e.g. 2026-05-01T13:45:00Z",
    "unknown offer_id": "the file reports on offers this database never made (another environment's?)",
    "required value is missing": "the column is there but empty: check the export",
    "unknown action": "map the shop's event names to view, add_to_cart and purchase",
    "expected a whole number": "ids must be whole numbers: check the column order and the export",
    FORMULA_REASON: "save the workbook with values instead of formulas",
}


def refusal_message(
    cur: psycopg2.extensions.cursor, settings: Settings, load_id: int, path: Path, sheet: str, counts: SheetCounts
) -> str:
    """Why a sheet with too many rejects refuses its file: the share, the main reason, what to change."""
    where = path.name if classify(path) != "workbook" else f"{path.name}, sheet {sheet}"
    # A dropped field never rejects its row: a rejected row's dropped fields are not why it was rejected.
    cur.execute(
        """
        select column_name, reason, count(distinct row_number) as rows
        from recsys.load_rejects
        where load_id = %s and sheet = %s and reason not like %s
        group by column_name, reason
        order by rows desc, column_name, reason
        limit 1
        """,
        (load_id, sheet, "%" + DROPPED_FIELD_REASON_END),
    )
    column, reason, rows = cur.fetchone()
    share = (
        f"all {counts.read:,} rows rejected"
        if counts.rejected == counts.read
        else f"{counts.rejected:,} of {counts.read:,} rows rejected, more than RECSYS_MAX_REJECT_RATE="
        f"{settings.max_reject_rate:g} allows"
    )
    hint = next((h for start, h in REJECT_HINTS.items() if reason.startswith(start)), None)
    main = f"{rows:,} of them with {column or 'the row'}: {reason}" + (f": {hint}" if hint else "")
    return f"{where}: {share}; {main}. Every reject is in recsys.load_rejects (load {load_id})"


def unsupported_message(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return (
            f"{path.name}: cannot tell what the file holds: name CSV files events*.csv, users*.csv, "
            "offers*.csv or feedback*.csv"
        )
    if suffix in {".xls", ".xlsm", ".xlsb", ".ods"}:
        return f"{path.name}: '{suffix}' workbooks are not supported: save it as .xlsx"
    return f"{path.name}: unsupported file type '{suffix or path.name}': expected .xlsx or .csv"


def record_refusal(
    conn: Connection, path: Path, sha256: str, size: int, reference_at: dt.datetime, message: str
) -> None:
    with conn.cursor() as cur:
        cur.execute(
            """
            insert into recsys.load_log (
                source_path, file_name, file_sha256, file_bytes, status, reference_at, message, finished_at
            ) values (%s, %s, %s, %s, 'refused', %s, %s, clock_timestamp())
            """,
            (str(path), path.name, sha256, size, reference_at, message),
        )
    conn.commit()


def night_refusals(conn: Connection, settings: Settings, reference_at: dt.datetime) -> list[dict[str, Any]]:
    """Files refused by the loads with this reference time (a night) and not made good since."""
    rows = fetch_all(conn, sql_text(settings, "night_refusals"), {"reference_at": reference_at})
    conn.commit()
    return rows


def loaded_event_count(conn: Connection) -> int:
    """Number of events in the database (for summaries)."""
    return int(fetch_value(conn, "select count(*) from recsys.behavior_events"))
