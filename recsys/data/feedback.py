"""Feedback: outcomes of the system's own offers from files (`recsys ingest-feedback`).

A `feedback*.csv` file (contract section 1: offer_id, event, event_at, revenue) goes through the
loader's machinery in `recsys.data.extract` (COPY into staging, validation with every bad row kept in
`load_rejects`, `load_log`, one transaction per file, a file known by its checksum is not loaded
twice) and ends in `offer_events` exactly as `record_offer_event` would put it: once per (offer,
event), the first report wins, an unsubscribe revokes the channel's consent, and a bounce suppresses
the address the offer went to. The protocol's bounds hold too: a row for an offer no sender claimed,
or with an `event_at` before the offer's first claim or after now (each beyond the 5 minute clock
skew, `recsys.offer_event_clock_skew()`), is a reject row naming the column, never loaded. The
nightly inbox load picks feedback files up the same way.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from recsys.db import Connection
from recsys.errors import RecsysError
from recsys.data.extract import LoadResult, classify, feedback_files, load_file_or_folder
from recsys.config.settings import Settings

__all__ = ["feedback_files", "ingest_feedback"]


def ingest_feedback(
    conn: Connection,
    settings: Settings,
    path: Path,
    *,
    reference_at: dt.datetime | None = None,
    force: bool = False,
) -> list[LoadResult]:
    """Load one feedback file, or every feedback file of a folder. One result per file."""
    if not path.is_dir() and path.exists() and classify(path) != "feedback":
        raise RecsysError(f"{path.name}: not a feedback file (expected a CSV named feedback*.csv)")
    return load_file_or_folder(
        conn,
        settings,
        path,
        folder_files=feedback_files,
        expected="feedback files (expected feedback*.csv)",
        reference_at=reference_at,
        force=force,
        feedback=True,
    )
