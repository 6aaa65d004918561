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
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import logging
import re
import shutil
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extras
from psycopg2 import sql

from recsys.config.settings import Settings
from recsys.db import Connection, fetch_all, fetch_value
from recsys.db.sqlfiles import load_sql
from recsys.errors import InputFileError, RecsysError

log = logging.getLogger(__name__)

# RECSYS_MAX_REJECT_RATE applies to sheets of at least this many rows: in a handful of rows (a
# daily delta, a hand-made fix) one or two typos are a large share by chance, not a broken export.
# A sheet whose rows are all rejected is refused whatever its size.
RATE_MIN_ROWS = 100
XLSX_MAX_ROWS = 1_048_575  # data rows below the header of one worksheet
HEADER_MAX_BYTES = 1 << 20  # a CSV header line is read up to this length
# What reading a damaged workbook raises: a broken zip container or compressed member, missing
# parts, and malformed XML (ElementTree's ParseError and lxml's XMLSyntaxError are SyntaxErrors).
DAMAGED_WORKBOOK = (zipfile.BadZipFile, zlib.error, SyntaxError, KeyError, ValueError, OSError, EOFError)


@dataclass(frozen=True)
class SheetSpec:
    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]


SHEETS: dict[str, SheetSpec] = {
    "users": SheetSpec(
        "users",
        (
            "user_id", "email_opt_in", "sms_opt_in", "push_opt_in", "email", "phone", "push_token",
            "timezone", "first_name", "updated_at",
        ),
        ("user_id",),
    ),
    "offers": SheetSpec(
        "offers",
        (
            "offer_id", "user_id", "sent_at", "offer_type", "offer_value", "channel", "timing",
            "propensity", "opened", "clicked", "converted", "revenue",
        ),
        ("offer_id", "user_id", "sent_at", "offer_type", "offer_value", "channel", "timing"),
    ),
    "events": SheetSpec(
        "events",
        (
            "event_id", "user_id", "session_id", "timestamp", "action", "product_category", "channel",
            "amount", "discount_used", "free_shipping_used",
        ),
        ("user_id", "session_id", "timestamp", "action"),
    ),
    # Outcomes of the system's own offers (CSV only), into offer_events like record_offer_event.
    "feedback": SheetSpec("feedback", ("offer_id", "event", "event_at", "revenue"), ("offer_id", "event", "event_at")),
}  # fmt: skip
# Users first, so a folder's users exist before their events; the order is otherwise free.
SHEET_ORDER = ("users", "offers", "events")
CSV_KINDS = ("events", "users", "offers", "feedback")
# The SQL that writes each sheet's target, and how the result counts.
WRITERS = {
    "events": "events_insert",
    "users": "users_upsert",
    "offers": "offers_upsert",
    "feedback": "feedback_insert",
}


@dataclass
class SheetCounts:
    read: int = 0
    loaded: int = 0
    rejected: int = 0
    duplicate: int = 0
    dropped: int = 0
    """Loaded rows with a field dropped (a header field with a line break; in load_rejects)."""

    def as_dict(self) -> dict[str, int]:
        return {
            "read": self.read,
            "loaded": self.loaded,
            "rejected": self.rejected,
            "duplicate": self.duplicate,
            "dropped": self.dropped,
        }


@dataclass
class LoadResult:
    """What happened to one file."""

    path: Path
    status: str  # loaded | skipped | refused | waiting (may still be arriving: left for a later run)
    load_id: int | None = None
    sheets: dict[str, SheetCounts] = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0

    def total(self, attr: str) -> int:
        return sum(getattr(c, attr) for c in self.sheets.values())

    def describe(self) -> str:
        if self.status == "refused":
            message = self.message.removeprefix(f"{self.path.name}: ")
            return f"{self.path.name}: refused, nothing loaded: {message}"
        if self.status == "skipped":
            return f"{self.path.name}: skipped: {self.message}"
        if self.status == "waiting":
            return f"{self.path.name}: waiting, nothing loaded: {self.message}"
        parts = [
            f"{name} {c.loaded:,} of {c.read:,} loaded"
            + (f", {c.rejected:,} rejected" if c.rejected else "")
            + (f", {c.duplicate:,} already present" if c.duplicate else "")
            + (f", {c.dropped:,} with a field dropped" if c.dropped else "")
            for name, c in self.sheets.items()
        ]
        rate = self.total("read") / self.seconds if self.seconds > 0 else 0.0
        return f"{self.path.name}: load {self.load_id}: {'; '.join(parts)} ({self.seconds:.1f} s, {rate:,.0f} rows/s)"


# --------------------------------------------------------------------------------------------
# Public entry points


def extract_path(
    conn: Connection,
    settings: Settings,
    path: Path,
    *,
    reference_at: dt.datetime | None = None,
    force: bool = False,
) -> list[LoadResult]:
    """Load one file, or every supported file of a folder (not recursive). One result per file."""
    reference_at = reference_at or dt.datetime.now(dt.UTC)
    if path.is_dir():
        files = supported_files(path)
        if not files:
            raise RecsysError(f"{path}: no input files (expected *.xlsx, events*.csv, users*.csv or offers*.csv)")
        return [load_file(conn, settings, f, reference_at=reference_at, force=force) for f in files]
    if not path.exists():
        raise RecsysError(f"{path}: no such file or folder")
    return [load_file(conn, settings, path, reference_at=reference_at, force=force)]


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
    feedback_files = sorted(p for p in inbox.iterdir() if p.is_file() and classify(p) == "feedback")
    files = feedback_files if feedback_only else [*supported_files(inbox), *feedback_files]
    held = _held_by_name(inbox)
    if not feedback_only:  # temporary names and held files of every kind, reported once a night
        results += [LoadResult(p, "waiting", message=why) for p, why in held.items() if p not in files]
    for f in files:
        why = held.get(f) or _unsettled(f, settings)
        if why is not None:
            results.append(LoadResult(f, "waiting", message=why))
            log.warning("%s", results[-1].describe())
            continue
        result = load_file(
            conn, settings, f, reference_at=reference_at or dt.datetime.now(dt.UTC), feedback=f in feedback_files
        )
        if result.status != "waiting":
            _move_into(f, inbox / ("refused" if result.status == "refused" else "loaded"))
        results.append(result)
    if not results:
        log.info("inbox %s: no new files", inbox)
    return results


# Names that upload tools and editors give a file while it is being written or edited: a partial
# download or upload (browsers, WinSCP, FileZilla, curl -o x.part), rsync's temporary copy
# (".name.XXXXXX"), and the lock files LibreOffice (".~lock.name#") and Excel ("~$name") keep next
# to an open file.
IN_PROGRESS_SUFFIXES = (
    ".part", ".partial", ".filepart", ".crdownload", ".download", ".tmp", ".temp", ".upload", ".uploading",
)  # fmt: skip


def _held_by_name(folder: Path) -> dict[Path, str]:
    """Files of the inbox that their neighbours' names say are still being written or edited."""
    held: dict[Path, str] = {}
    names = {p.name: p for p in folder.iterdir() if p.is_file()}
    for name, p in names.items():
        lower = name.lower()
        if lower.startswith(".~lock.") and lower.endswith("#"):
            target = name[len(".~lock.") : -1]
            if target in names:
                held[names[target]] = f"open in an editor (lock file {name}): left for a later run"
        elif lower.startswith("~$"):
            # Excel names its owner file "~$" + the name, or + the name without its first two letters
            rest = name[2:]
            for other, q in names.items():
                if other != name and other.endswith(rest) and len(other) - len(rest) in (0, 2):
                    held[q] = f"open in Excel (owner file {name}): left for a later run"
        elif lower.endswith(IN_PROGRESS_SUFFIXES) or (lower.startswith(".") and re.search(r"\.(csv|xlsx)\.", lower)):
            stem = name.lstrip(".")
            if any(k in stem.lower() for k in (".csv", ".xlsx")):
                held[p] = "upload in progress (a temporary name): left for a later run"
    return held


def _unsettled(path: Path, settings: Settings) -> str | None:
    """Why a file may still be arriving: modified less than RECSYS_INBOX_SETTLE_SECONDS ago."""
    settle = settings.inbox_settle_seconds
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return None  # load_file reports what is wrong with it
    if age >= settle:
        return None
    when = f"modified {age:.0f} s ago" if age >= 0 else "modified in the future (check the clocks)"
    return f"{when}, within RECSYS_INBOX_SETTLE_SECONDS={settle}: may still be arriving; left for a later run"


def supported_files(folder: Path) -> list[Path]:
    """Input files of a folder in load order: workbooks, then users, offers and events CSVs."""
    found: list[tuple[int, str, Path]] = []
    for p in folder.iterdir():
        if not p.is_file() or p.name.startswith((".", "~$")):
            continue
        kind = classify(p)
        if kind == "feedback":
            log.info("%s: feedback files are loaded by `recsys ingest-feedback`; skipped", p.name)
        elif kind is not None:
            rank = 0 if kind == "workbook" else 1 + SHEET_ORDER.index(kind)
            found.append((rank, p.name, p))
    return [p for _, _, p in sorted(found)]


def classify(path: Path) -> str | None:
    """`workbook`, a CSV kind (`events`, `users`, `offers`, `feedback`), or None."""
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        return "workbook"
    if suffix == ".csv":
        name = path.name.lower()
        return next((k for k in CSV_KINDS if name.startswith(k)), None)
    return None


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
        before = _signature(path)
        sha256, size = _file_digest(path)
    except OSError as e:
        # Recorded like any refusal, so that the night's refusal check (check_refusals) sees it.
        message = f"{path.name}: cannot read the file: {e.strerror or e}"
        _record_refusal(conn, path, UNREADABLE_SHA256, _size_or_zero(path), reference_at, message)
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
            conn, settings, path, sha256, size, reference_at, feedback, unchanged=lambda: _signature(path) == before
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
        _record_refusal(conn, path, sha256, size, reference_at, message)
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


# --------------------------------------------------------------------------------------------
# One file, one transaction


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
        raise InputFileError(_unsupported_message(path))
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
        sheets: dict[str, SheetCounts] = {}
        if kind == "workbook":
            for name, rows, formula_rejects in _workbook_sheets(path):
                _stage_rows(cur, SHEETS[name], rows, path)
                sheets[name] = _validate(cur, settings, SHEETS[name], params, path, formula_rejects)
        else:
            staged = time.perf_counter()
            _stage_csv(cur, SHEETS[kind], path)
            log.debug("%s: COPY took %.2f s", path.name, time.perf_counter() - staged)
            sheets[kind] = _validate(cur, settings, SHEETS[kind], params, path, [])
        # Mostly rejected rows mean the file is wrong, not a few of its rows: refuse it whole, but
        # keep its rejects so that the refusal can be understood.
        refusals = [
            _refusal_message(cur, settings, load_id, path, name, c)
            for name, c in sheets.items()
            if _too_many_rejects(c, settings)
        ]
        if not refusals:
            for name, counts in sheets.items():
                _write(cur, settings, SHEETS[name], params, path, counts)
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
    cur.execute(sql.SQL("select count(*) from pg_temp.{}").format(stage))
    counts.read = cur.fetchone()[0] + formula_rows
    _run_check(cur, _sql(settings, f"{spec.name}_check"), params)
    if spec.name == "events":
        cur.execute("select exists (select from pg_temp.events_checked where event_id is null and not is_rejected)")
        if cur.fetchone()[0]:
            cur.execute(_sql(settings, "events_derive_ids"))
    step("validation")
    cur.execute(sql.SQL("analyze pg_temp.{}").format(checked))
    cur.execute(_sql(settings, f"{spec.name}_rejects"), params)
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
    cur.execute(sql.SQL("select count(*) from pg_temp.{} where is_rejected").format(checked))
    counts.rejected = cur.fetchone()[0] + formula_rows
    if spec.name == "users":
        cur.execute("select count(*) from pg_temp.users_checked where has_dropped_fields and not is_rejected")
        counts.dropped = cur.fetchone()[0]
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
        cur.execute("select min(event_at_v), max(event_at_v) from pg_temp.events_checked where not is_rejected")
        params["min_at"], params["max_at"] = cur.fetchone()
        if params["min_at"] is not None:
            cur.execute("select recsys.ensure_event_partitions(%(min_at)s, %(max_at)s)", params)
    cur.execute(_sql(settings, WRITERS[spec.name]), params)
    counts.loaded = cur.fetchone()[0]
    step("write")
    counts.duplicate = counts.read - counts.rejected - counts.loaded


def _too_many_rejects(counts: SheetCounts, settings: Settings) -> bool:
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


def _refusal_message(
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


def _sql(settings: Settings, name: str) -> str:
    return load_sql(settings, f"extract/{name}")


# --------------------------------------------------------------------------------------------
# Staging


def _normalise_header(name: object) -> str:
    return re.sub(r"[\s\-]+", "_", str(name if name is not None else "").strip().lower())


def _column_map(header: list[object], spec: SheetSpec, where: str) -> list[str]:
    """Staging column for each file column: `raw_<name>` for known ones, `extra_<i>` otherwise."""
    names = [_normalise_header(h) for h in header]
    seen: set[str] = set()
    out = []
    for i, n in enumerate(names):
        if n in spec.columns:
            if n in seen:
                raise InputFileError(f"{where}: column '{n}' appears twice in the header")
            seen.add(n)
            out.append(f"raw_{n}")
        else:
            out.append(f"extra_{i}")
    missing = [c for c in spec.required if c not in seen]
    if missing:
        found = ", ".join(n for n in names if n) or "none"
        hint = ""
        if len(names) == 1 and ";" in names[0]:
            hint = " (the header looks semicolon-separated; expected commas)"
        raise InputFileError(f"{where}: missing required column(s) {', '.join(missing)}; found: {found}{hint}")
    return out


def _create_stage(cur: psycopg2.extensions.cursor, spec: SheetSpec, extra: list[str], identity: bool) -> None:
    row_number = (
        "row_number bigint generated by default as identity (start with 2)" if identity else "row_number bigint"
    )
    columns = [sql.SQL(row_number)]
    columns += [sql.SQL("{} text").format(sql.Identifier(f"raw_{c}")) for c in spec.columns]
    columns += [sql.SQL("{} text").format(sql.Identifier(c)) for c in extra]
    cur.execute(
        sql.SQL("create temp table {} ({}) on commit drop").format(
            sql.Identifier(f"stage_{spec.name}"), sql.SQL(", ").join(columns)
        )
    )


def _stage_csv(cur: psycopg2.extensions.cursor, spec: SheetSpec, path: Path) -> None:
    with path.open("rb") as f:
        # The header ends at the first line break of any style: old Mac CSV files end lines with
        # a bare \r, which COPY reads but readline() does not split on.
        first = re.split(rb"\r\n?|\n", f.readline(HEADER_MAX_BYTES), maxsplit=1)[0]
        if not first.strip():
            raise InputFileError(f"{path.name}: the file is empty (expected a header row)")
        try:
            header_line = first.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise InputFileError(
                f"{path.name}: line 1 is not valid UTF-8 (byte {e.start}); save the file as UTF-8"
            ) from e
        header = next(csv.reader([header_line]))
        columns = _column_map(header, spec, path.name)
        _create_stage(cur, spec, [c for c in columns if c.startswith("extra_")], identity=True)
        f.seek(0)
        copy = sql.SQL("copy {} ({}) from stdin with (format csv, header true, encoding 'UTF8')").format(
            sql.Identifier(f"stage_{spec.name}"),
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        )
        _copy(cur, copy.as_string(cur), _EndMarkerGuard(f), path.name)


class _EndMarkerGuard(io.RawIOBase):
    """A CSV byte stream for COPY in which a line that is exactly `\\.` reads as data.

    PostgreSQL (before 18) ends `COPY ... FROM STDIN` at such a line, even in CSV format: the rows
    after it would silently not be loaded. Quoted (`"\\."`) it is an ordinary one-field row, which
    is what a CSV reader makes of it, so the file then loads or fails as its rows say (a row with
    too few fields refuses the file, naming the line). Only lines outside quoted fields are
    changed, with quote parity tracked exactly as COPY tracks it (quote and escape are both `"`:
    every `"` toggles); a `\\.` line inside a multi-line quoted value is data already. Blocks
    without a backslash followed by a dot pass through untouched, so large files stay fast.
    """

    _MARKER = re.compile(rb"(?<=[\r\n])\\\.(?=[\r\n])")

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._last = b"\n"  # the last byte passed on: the stream starts at a line start
        self._tail = b""  # bytes read but not passed on yet (a marker may continue after them)
        self._in_quote = False
        self._eof = False
        self._out = b""

    def readable(self) -> bool:
        return True

    def _fill(self, size: int) -> None:
        while not self._eof and len(self._out) < size:
            chunk = self._raw.read(1 << 20)
            self._eof = not chunk
            block = self._last + self._tail + chunk
            # Keep the last two bytes back unless the stream ended: a marker starting before the
            # cut is then always followed by the byte that says whether it is a whole line.
            cut = len(block) if self._eof else max(len(block) - 2, 1)
            passed, end = self._guard(block, cut)
            self._out += passed
            self._last, self._tail = block[end - 1 : end], block[end:]

    def _guard(self, block: bytes, cut: int) -> tuple[bytes, int]:
        """block[1:end] with marker lines starting before `cut` quoted, and `end` (>= cut)."""
        if b"\\." not in block:
            self._in_quote ^= block.count(b'"', 1, cut) % 2 == 1
            return block[1:cut], cut
        out = []
        position = scanned = 1  # passed on up to `position`; quotes counted up to `scanned`
        for m in self._MARKER.finditer(block, 1, len(block)):
            if m.start() >= cut:
                break
            self._in_quote ^= block.count(b'"', scanned, m.start()) % 2 == 1
            scanned = m.start()
            if self._in_quote:
                continue  # inside a quoted value the line is data already
            out += [block[position : m.start()], b'"\\."']
            position = scanned = m.end()
        end = max(cut, position)
        self._in_quote ^= block.count(b'"', scanned, end) % 2 == 1
        out.append(block[position:end])
        return b"".join(out), end

    def read(self, size: int = -1) -> bytes:
        self._fill(size if size >= 0 else 1 << 62)
        if size < 0:
            data, self._out = self._out, b""
        else:
            data, self._out = self._out[:size], self._out[size:]
        return data


def _copy(cur: psycopg2.extensions.cursor, statement: str, stream: Any, where: str) -> None:
    cur.execute("savepoint copy_rows")
    try:
        cur.copy_expert(statement, stream, size=1 << 20)
    except (psycopg2.DataError, psycopg2.errors.BadCopyFileFormat) as e:
        cur.execute("rollback to savepoint copy_rows")
        raise InputFileError(f"{where}: cannot be read as CSV: {_copy_problem(e)}") from e
    cur.execute("release savepoint copy_rows")


def _copy_problem(e: psycopg2.Error) -> str:
    message = (e.diag.message_primary or str(e)).strip()
    context = e.diag.context or ""
    line = re.search(r"line (\d+)", context)
    if "invalid byte sequence" in message and "0x00" in message:
        message = "contains a NUL byte (0x00), which text cannot hold"
    elif "invalid byte sequence" in message:
        message = f"not valid UTF-8 ({message.split(': ', 1)[-1]}); save the file as UTF-8"
    # Name columns as the file does, not by their staging names (raw_<name>, extra_<index>).
    message = re.sub(r'"raw_(\w+)"', r'"\1"', message)
    message = re.sub(r'"extra_(\d+)"', lambda m: f"{int(m.group(1)) + 1}", message)
    return f"line {line.group(1)}: {message}" if line else message


class _RowStream(io.RawIOBase):
    """A read-only byte stream over CSV lines produced lazily, for COPY FROM STDIN."""

    def __init__(self, rows: Iterable[list[Any]]) -> None:
        self._lines = self._encode(rows)
        self._buffer = b""

    @staticmethod
    def _encode(rows: Iterable[list[Any]]) -> Iterator[bytes]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for i, row in enumerate(rows, 1):
            writer.writerow(row)
            if i % 5000 == 0:
                yield out.getvalue().encode("utf-8")
                out.seek(0)
                out.truncate()
        yield out.getvalue().encode("utf-8")

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._lines, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _stage_rows(cur: psycopg2.extensions.cursor, spec: SheetSpec, rows: Iterable[list[Any]], path: Path) -> None:
    """Stage rows already mapped to `spec.columns` order, each prefixed with its row number."""
    _create_stage(cur, spec, [], identity=False)
    copy = sql.SQL("copy {} (row_number, {}) from stdin with (format csv)").format(
        sql.Identifier(f"stage_{spec.name}"),
        sql.SQL(", ").join(sql.Identifier(f"raw_{c}") for c in spec.columns),
    )
    _copy(cur, copy.as_string(cur), _RowStream(rows), f"{path.name}, sheet {spec.name}")


# --------------------------------------------------------------------------------------------
# Workbooks


def _cell_text(value: Any) -> str | None:
    """A cell value as the text the validation SQL reads (naive datetimes are UTC)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _workbook_sheets(path: Path) -> Iterator[tuple[str, Iterator[list[Any]], list[tuple[int, str, str]]]]:
    """(sheet name, rows as [row_number, values in spec order], formula rejects) per known sheet.

    Raises InputFileError for a file that is not a readable workbook or lacks the events sheet.
    """
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=False)
    except (InvalidFileException, *DAMAGED_WORKBOOK) as e:
        raise InputFileError(
            f"{path.name}: not a readable .xlsx workbook (corrupt, truncated or another format): "
            f"{type(e).__name__}: {e}"
        ) from e
    try:
        by_name = {ws.title.strip().lower(): ws for ws in wb.worksheets}
        if "events" not in by_name:
            raise InputFileError(
                f"{path.name}: the workbook has no 'events' sheet (sheets: {', '.join(wb.sheetnames)})"
            )
        for name in SHEET_ORDER:
            ws = by_name.get(name)
            if ws is None:
                continue
            where = f"{path.name}, sheet {ws.title}"
            try:
                rows = ws.iter_rows()
                header_cells = next(rows, None)
                if header_cells is None or all(c.value is None for c in header_cells):
                    raise InputFileError(f"{where}: the sheet is empty (expected a header row)")
                spec = SHEETS[name]
                columns = _column_map([c.value for c in header_cells], spec, where)
                positions = {c: i for i, c in enumerate(columns) if c.startswith("raw_")}
                formula_rejects: list[tuple[int, str, str]] = []
                staged = list(_sheet_rows(rows, spec, positions, formula_rejects, where))
            except DAMAGED_WORKBOOK as e:
                raise InputFileError(
                    f"{where}: the workbook is damaged and cannot be read: {type(e).__name__}: {e}"
                ) from e
            yield name, iter(staged), formula_rejects
    finally:
        wb.close()


def _sheet_rows(
    rows: Iterator[Any],
    spec: SheetSpec,
    positions: dict[str, int],
    formula_rejects: list[tuple[int, str, str]],
    where: str,
) -> Iterator[list[Any]]:
    order = [positions.get(f"raw_{c}") for c in spec.columns]
    for row_number, cells in enumerate(rows, start=2):
        if row_number - 1 > XLSX_MAX_ROWS:
            raise InputFileError(f"{where}: more rows than a worksheet can hold")
        formulas = [
            (spec.columns[k], str(cells[i].value))
            for k, i in enumerate(order)
            if i is not None and i < len(cells) and cells[i].data_type == "f"
        ]
        if formulas:
            formula_rejects.extend((row_number, col, value) for col, value in formulas)
            continue
        values = [_cell_text(cells[i].value) if i is not None and i < len(cells) else None for i in order]
        if all(v is None or v == "" for v in values):
            continue  # blank rows (often trailing ones) are not data
        yield [row_number, *values]


# --------------------------------------------------------------------------------------------
# Helpers


def _unsupported_message(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return (
            f"{path.name}: cannot tell what the file holds: name CSV files events*.csv, users*.csv, "
            "offers*.csv or feedback*.csv"
        )
    if suffix in {".xls", ".xlsm", ".xlsb", ".ods"}:
        return f"{path.name}: '{suffix}' workbooks are not supported: save it as .xlsx"
    return f"{path.name}: unsupported file type '{suffix or path.name}': expected .xlsx or .csv"


class _FileChanged(Exception):
    """The file changed while it was being loaded (internal: load_file turns it into `waiting`)."""


def _signature(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


# load_log.file_sha256 of a file that could not be read: not 64 hex digits, so it never equals a
# real checksum and never makes a later (readable) copy of the file look already loaded.
UNREADABLE_SHA256 = "unreadable: no checksum"


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _record_refusal(
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


def _move_into(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        target = folder / f"{path.stem}.{stamp}{path.suffix}"
    shutil.move(str(path), target)
    return target


def night_refusals(conn: Connection, settings: Settings, reference_at: dt.datetime) -> list[dict[str, Any]]:
    """Files refused by the loads with this reference time (a night) and not made good since."""
    rows = fetch_all(conn, _sql(settings, "night_refusals"), {"reference_at": reference_at})
    conn.commit()
    return rows


def loaded_event_count(conn: Connection) -> int:
    """Number of events in the database (for summaries)."""
    return int(fetch_value(conn, "select count(*) from recsys.behavior_events"))
