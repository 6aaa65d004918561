"""Extract: validated, idempotent loads of input files into PostgreSQL (contract section 1).

`extract_path` loads one file or every supported file of a folder; `load_inbox` is the nightly
form (new files from the inbox, moved to `loaded/` afterwards). Each file is one transaction:

1. the file's rows are streamed into a temporary staging table with `COPY` (a CSV file is sent
   as it is and parsed by the server; a workbook sheet is read with openpyxl in read-only mode and
   streamed as CSV), every value as text;
2. SQL files in `sql/extract/` type every value, name each problem (`load_rejects`: file, row,
   column, value, reason) and derive missing event ids;
3. valid rows are inserted (events: once per event id) or upserted (users, past offers), unless
   a sheet's rows are all, or mostly (RECSYS_MAX_REJECT_RATE), rejected: then the file is refused
   with its rejects kept and a message naming the main reason;
4. `load_log` records the counts.

A file that cannot be read at all is refused with one message and nothing of it is loaded; the
refusal itself is recorded in `load_log`. An inbox file that may still be arriving (recently
modified, an upload's or editor's name, changed while read) is left for a later run (`waiting`).
Called by the CLI and the nightly DAG (`recsys.orchestration.pipeline`).

This package holds the load itself (one file, one transaction: stage, validate, write) and
re-exports the names of its modules: `sheets` (what is loaded), `inbox` (which files, when),
`readers` (CSV and workbook input), `staging` (COPY into temporary tables), `statistics` (the
analyze of what a load changed a lot) and `reporting` (refusal messages, the night's refusals).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extras
from psycopg2 import sql

from recsys.config.settings import Settings
from recsys.data.extract.inbox import (
    IN_PROGRESS_SUFFIXES,
    UNREADABLE_SHA256,
    feedback_files,
    file_digest,
    held_by_name,
    move_into,
    signature,
    size_or_zero,
    supported_files,
    unsettled,
)
from recsys.data.extract.readers import DAMAGED_WORKBOOK, XLSX_MAX_ROWS, workbook_sheets
from recsys.data.extract.reporting import (
    DROPPED_FIELD_REASON_END,
    FORMULA_REASON,
    RATE_MIN_ROWS,
    REJECT_HINTS,
    loaded_event_count,
    night_refusals,
    record_refusal,
    refusal_message,
    too_many_rejects,
    unsupported_message,
)
from recsys.data.extract.sheets import (
    CSV_KINDS,
    SHEET_ORDER,
    SHEETS,
    WRITERS,
    LoadResult,
    SheetCounts,
    SheetSpec,
    classify,
    rejects_sql,
    sql_text,
)
from recsys.data.extract.staging import HEADER_MAX_BYTES, stage_csv, stage_rows
from recsys.data.extract.statistics import analyze_changed, changed_tables
from recsys.db import Connection, fetch_all
from recsys.errors import InputFileError, RecsysError

__all__ = [
    "CSV_KINDS",
    "DAMAGED_WORKBOOK",
    "DROPPED_FIELD_REASON_END",
    "FORMULA_REASON",
    "HEADER_MAX_BYTES",
    "IN_PROGRESS_SUFFIXES",
    "RATE_MIN_ROWS",
    "REJECT_HINTS",
    "SHEETS",
    "SHEET_ORDER",
    "UNREADABLE_SHA256",
    "WRITERS",
    "XLSX_MAX_ROWS",
    "LoadResult",
    "SheetCounts",
    "SheetSpec",
    "classify",
    "extract_path",
    "feedback_files",
    "load_file",
    "load_file_or_folder",
    "load_inbox",
    "loaded_event_count",
    "night_refusals",
    "supported_files",
]

log = logging.getLogger(__name__)


def extract_path(
    conn: Connection,
    settings: Settings,
    path: Path,
    *,
    reference_at: dt.datetime | None = None,
    force: bool = False,
) -> list[LoadResult]:
    """Load one file, or every supported file of a folder (not recursive). One result per file."""
    return load_file_or_folder(
        conn,
        settings,
        path,
        folder_files=supported_files,
        expected="input files (expected *.xlsx, events*.csv, users*.csv or offers*.csv)",
        reference_at=reference_at,
        force=force,
    )


def load_file_or_folder(
    conn: Connection,
    settings: Settings,
    path: Path,
    *,
    folder_files: Callable[[Path], list[Path]],
    expected: str,
    reference_at: dt.datetime | None = None,
    force: bool = False,
    feedback: bool = False,
) -> list[LoadResult]:
    """Load the file `path`, or the files `folder_files` picks in the folder `path` (a folder with
    none is an error naming the `expected` files), all against one reference time (default: now).
    One result per file. `extract_path` and `recsys.data.feedback.ingest_feedback` call it."""
    reference_at = reference_at or dt.datetime.now(dt.UTC)
    if path.is_dir():
        files = folder_files(path)
        if not files:
            raise RecsysError(f"{path}: no {expected}")
    elif not path.exists():
        raise RecsysError(f"{path}: no such file or folder")
    else:
        files = [path]
    return [load_file(conn, settings, f, reference_at=reference_at, force=force, feedback=feedback) for f in files]


def load_inbox(
    conn: Connection,
    settings: Settings,
    *,
    reference_at: dt.datetime | None = None,
    feedback_only: bool = False,
) -> list[LoadResult]:
    """The nightly form: load new inbox files, move loaded (or already known) ones to `loaded/`
    and refused ones to `refused/`, so the inbox only ever holds what has not been looked at.

    A file that may still be arriving (modified within RECSYS_INBOX_SETTLE_SECONDS, held by an
    upload or editor lock, or changed while it was read) stays in the inbox as `waiting` and is
    loaded by a later run. `feedback_only` loads only `feedback*.csv` files.
    """
    inbox = settings.inbox
    inbox.mkdir(parents=True, exist_ok=True)
    results: list[LoadResult] = []
    # feedback files last: they report on offers, which the other files do not hold
    feedback = feedback_files(inbox)
    files = feedback if feedback_only else [*supported_files(inbox), *feedback]
    held = held_by_name(inbox)
    if not feedback_only:  # temporary names and held files of every kind, reported once a night
        results += [LoadResult(p, "waiting", message=why) for p, why in held.items() if p not in files]
    for f in files:
        why = held.get(f) or unsettled(f, settings)
        if why is not None:
            results.append(LoadResult(f, "waiting", message=why))
            log.warning("%s", results[-1].describe())
            continue
        result = load_file(
            conn, settings, f, reference_at=reference_at or dt.datetime.now(dt.UTC), feedback=f in feedback
        )
        if result.status != "waiting":
            move_into(f, inbox / ("refused" if result.status == "refused" else "loaded"))
        results.append(result)
    if not results:
        log.info("inbox %s: no new files", inbox)
    return results


def load_file(
    conn: Connection,
    settings: Settings,
    path: Path,
    *,
    reference_at: dt.datetime,
    force: bool = False,
    feedback: bool = False,
) -> LoadResult:
    """Load one file in one transaction. Never raises for bad input: it returns `refused`.

    Feedback files are loaded only with `feedback=True` (`recsys ingest-feedback`, the inbox).
    """
    started = time.perf_counter()
    try:
        before = signature(path)
        sha256, size = file_digest(path)
    except OSError as e:
        # Recorded like any refusal, so that the night's refusal check (check_refusals) sees it.
        message = f"{path.name}: cannot read the file: {e.strerror or e}"
        record_refusal(conn, path, UNREADABLE_SHA256, size_or_zero(path), reference_at, message)
        refused = LoadResult(path, "refused", message=message, seconds=time.perf_counter() - started)
        log.warning("%s", refused.describe())
        return refused
    if not force:
        previous = fetch_all(
            conn,
            "select load_id, finished_at from recsys.load_log "
            "where file_sha256 = %s and status = 'loaded' order by load_id limit 1",
            (sha256,),
        )
        conn.commit()
        if previous:
            p = previous[0]
            return LoadResult(
                path,
                "skipped",
                load_id=p["load_id"],
                message=f"same content already loaded as load {p['load_id']} "
                f"on {p['finished_at']:%Y-%m-%d %H:%M} UTC (use --force to load it again)",
            )
    try:
        load_id, sheets, too_many = _load_in_transaction(
            conn, settings, path, sha256, size, reference_at, feedback, unchanged=lambda: signature(path) == before
        )
    except _FileChanged:
        conn.rollback()
        waiting = LoadResult(
            path,
            "waiting",
            message="the file changed while it was read (still being written?): left for a later run",
            seconds=time.perf_counter() - started,
        )
        log.warning("%s", waiting.describe())
        return waiting
    except InputFileError as e:
        conn.rollback()
        # The message may quote the file (a header it could not read); PostgreSQL text holds no NUL.
        message = str(e).replace("\x00", "\\x00")
        record_refusal(conn, path, sha256, size, reference_at, message)
        refused = LoadResult(path, "refused", message=message, seconds=time.perf_counter() - started)
        log.warning("%s", refused.describe())
        return refused
    except BaseException:
        conn.rollback()
        raise
    if too_many is not None:
        refused = LoadResult(path, "refused", load_id, sheets, message=too_many, seconds=time.perf_counter() - started)
        log.warning("%s", refused.describe())
        return refused
    result = LoadResult(path, "loaded", load_id, sheets, seconds=time.perf_counter() - started)
    log.info("%s", result.describe())
    return result


def _load_in_transaction(
    conn: Connection,
    settings: Settings,
    path: Path,
    sha256: str,
    size: int,
    reference_at: dt.datetime,
    feedback: bool = False,
    unchanged: Callable[[], bool] | None = None,
) -> tuple[int, dict[str, SheetCounts], str | None]:
    """Load one file; returns its load id, counts per sheet, and why it was refused (None: loaded).

    `unchanged` is asked just before the commit: a file that changed while it was read (a writer
    still appending) is not committed half (raises _FileChanged).
    """
    kind = classify(path)
    if kind is None:
        raise InputFileError(unsupported_message(path))
    if kind == "feedback" and not feedback:
        raise InputFileError(f"{path.name}: feedback files are loaded by `recsys ingest-feedback`, not `extract`")
    with conn.cursor() as cur:
        _tune_session(cur)
        cur.execute(
            """
            insert into recsys.load_log (source_path, file_name, file_sha256, file_bytes, status, reference_at)
            values (%s, %s, %s, %s, 'loading', %s) returning load_id
            """,
            (str(path), path.name, sha256, size, reference_at),
        )
        load_id = cur.fetchone()[0]
        params = _params(settings, load_id, path, reference_at)
        changed_before = changed_tables(cur, settings)
        sheets: dict[str, SheetCounts] = {}
        if kind == "workbook":
            for name, rows, formula_rejects in workbook_sheets(path):
                stage_rows(cur, SHEETS[name], rows, path)
                sheets[name] = _validate(cur, settings, SHEETS[name], params, path, formula_rejects)
        else:
            staged = time.perf_counter()
            stage_csv(cur, SHEETS[kind], path)
            log.debug("%s: COPY took %.2f s", path.name, time.perf_counter() - staged)
            sheets[kind] = _validate(cur, settings, SHEETS[kind], params, path, [])
        # Mostly rejected rows mean the file is wrong, not a few of its rows: refuse it whole, but
        # keep its rejects so that the refusal can be understood.
        refusals = [
            refusal_message(cur, settings, load_id, path, name, c)
            for name, c in sheets.items()
            if too_many_rejects(c, settings)
        ]
        if not refusals:
            for name, counts in sheets.items():
                _write(cur, settings, SHEETS[name], params, path, counts)
            step = _Steps(path.name)
            if analyzed := analyze_changed(cur, settings, changed_before):
                step(f"analyze ({', '.join(analyzed)})")
        message = "; ".join(refusals) or None
        cur.execute(
            """
            update recsys.load_log
            set status = %s, rows_read = %s, rows_loaded = %s, rows_rejected = %s,
                rows_duplicate = %s, sheet_counts = %s, message = %s, finished_at = clock_timestamp()
            where load_id = %s
            """,
            (
                "refused" if refusals else "loaded",
                sum(c.read for c in sheets.values()),
                sum(c.loaded for c in sheets.values()),
                sum(c.rejected for c in sheets.values()),
                sum(c.duplicate for c in sheets.values()),
                psycopg2.extras.Json({k: v.as_dict() for k, v in sheets.items()}),
                message,
                load_id,
            ),
        )
    if unchanged is not None and not unchanged():
        raise _FileChanged(path.name)
    committing = time.perf_counter()
    conn.commit()
    log.debug("%s: commit took %.2f s", path.name, time.perf_counter() - committing)
    return load_id, sheets, message


def _tune_session(cur: psycopg2.extensions.cursor) -> None:
    # Sorting and hashing millions of staged rows is much faster in memory.
    cur.execute("set local work_mem = '256MB'")
    # Compiling expressions costs more than it saves on these one-pass statements.
    cur.execute("set local jit = off")
    cur.execute("savepoint tune")
    try:
        # Only possible before the session first touches a temporary table.
        cur.execute("set temp_buffers = '256MB'")
        cur.execute("release savepoint tune")
    except psycopg2.errors.InvalidParameterValue:
        cur.execute("rollback to savepoint tune")


class _Steps:
    """Debug-level timings of a load's steps (run with -v to see where the time goes)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.last = time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        log.debug("%s: %s took %.2f s", self.where, step, now - self.last)
        self.last = now


def _params(settings: Settings, load_id: int, path: Path, reference_at: dt.datetime) -> dict[str, Any]:
    return {
        "load_id": load_id,
        "file_name": path.name,
        "reference_at": reference_at,
        "oldest_at": reference_at - dt.timedelta(days=settings.event_retention_days),
    }


def _validate(
    cur: psycopg2.extensions.cursor,
    settings: Settings,
    spec: SheetSpec,
    params: dict[str, Any],
    path: Path,
    formula_rejects: list[tuple[int, str, str]],
) -> SheetCounts:
    """Type the staged rows of one sheet, record its rejects and count them (nothing written yet)."""
    stage = sql.Identifier(f"stage_{spec.name}")
    checked = sql.Identifier(f"{spec.name}_checked")
    counts = SheetCounts()
    step = _Steps(f"{path.name}, {spec.name}")
    # Rows with formula cells are not staged; a row is one row however many formulas it holds.
    formula_rows = len({row for row, _, _ in formula_rejects})
    _run_check(cur, sql_text(settings, f"{spec.name}_check"), params)
    step("validation")
    if spec.name == "events":
        # one pass over the checked rows for what the later steps need to know (_write reads the range)
        cur.execute(sql_text(settings, "events_summary"))
        cur.execute("select rows_read, rows_rejected, is_id_missing from pg_temp.events_summary")
        read, rejected, is_id_missing = cur.fetchone()
        if is_id_missing:
            cur.execute(sql_text(settings, "events_derive_ids"))
            step("derived ids")
    else:
        cur.execute(sql.SQL("select count(*) from pg_temp.{}").format(stage))
        read = cur.fetchone()[0]
        cur.execute(sql.SQL("select count(*) from pg_temp.{} where is_rejected").format(checked))
        rejected = cur.fetchone()[0]
    counts.read = read + formula_rows
    counts.rejected = rejected + formula_rows
    if spec.name == "users":
        cur.execute("select count(*) from pg_temp.users_checked where has_dropped_fields and not is_rejected")
        counts.dropped = cur.fetchone()[0]
    # A clean file has no problem to record: skip the pass over every checked row that finds none.
    if rejected or counts.dropped:
        cur.execute(sql.SQL("analyze pg_temp.{}").format(checked))
        cur.execute(rejects_sql(settings, spec.name), {**params, "sheet": spec.name})
        step("rejects")
    if formula_rejects:
        psycopg2.extras.execute_values(
            cur,
            "insert into recsys.load_rejects (load_id, file_name, sheet, row_number, column_name, value, reason) "
            "values %s",
            [
                (params["load_id"], path.name, spec.name, row, column, value[:200], FORMULA_REASON)
                for row, column, value in formula_rejects
            ],
        )
    return counts


def _write(
    cur: psycopg2.extensions.cursor,
    settings: Settings,
    spec: SheetSpec,
    params: dict[str, Any],
    path: Path,
    counts: SheetCounts,
) -> None:
    """Insert or upsert the valid rows of one validated sheet; fills in loaded and duplicate."""
    step = _Steps(f"{path.name}, {spec.name}")
    params = dict(params)
    if spec.name == "events":
        cur.execute("select min_at, max_at from pg_temp.events_summary")
        params["min_at"], params["max_at"] = cur.fetchone()
        if params["min_at"] is not None:
            cur.execute("select recsys.ensure_event_partitions(%(min_at)s, %(max_at)s)", params)
    if spec.name == "offers":
        # offers_upsert inserts after an anti-join: a concurrent load's offer writes wait for this
        # load's commit (readers do not)
        cur.execute("lock table recsys.offer_history in share row exclusive mode")
    cur.execute(sql_text(settings, WRITERS[spec.name]), params)
    # events_insert is a plain insert: the row count is the number of events added
    counts.loaded = cur.rowcount if spec.name == "events" else cur.fetchone()[0]
    step("write")
    counts.duplicate = counts.read - counts.rejected - counts.loaded


def _run_check(cur: psycopg2.extensions.cursor, check_sql: str, params: dict[str, Any]) -> None:
    """Run a validation query, optimistically first.

    Timestamps are parsed by a plain cast (fast) and, only if some value makes that statement
    fail, again by the exception-safe parser that turns each unreadable value into a reject.
    Both paths give the same result for every readable value.
    """
    fast = check_sql.replace("recsys.parse_iso_timestamp(", "recsys.cast_iso_timestamp(")
    if fast == check_sql:
        cur.execute(check_sql, params)
        return
    cur.execute("savepoint fast_check")
    try:
        cur.execute(fast, params)
    except psycopg2.DataError:
        cur.execute("rollback to savepoint fast_check")
        cur.execute(check_sql, params)
    else:
        cur.execute("release savepoint fast_check")


class _FileChanged(Exception):
    """The file changed while it was being loaded (internal: load_file turns it into `waiting`)."""
