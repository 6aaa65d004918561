"""Tests of `recsys.data.extract`: validated, idempotent loads of input files (contract section 1).

The corpus in `tests/data/bad/` (written by `tests/data/make_bad_inputs.py`) holds one file per
kind of bad input; `CASES` below says, per file, exactly what the loader must make of it: refused
with a message naming the file and the problem, or loaded with these rejects and these rows. The
other tests cover header matching, CSV/xlsx equivalence, idempotency, the users upsert rules, past
offers, the reference time, the timestamp fast path, the inbox, folders and the command line.
"""

from __future__ import annotations

import csv
import datetime as dt
import fnmatch
import importlib.util
import shutil
import subprocess
import threading
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import sender_support

from recsys.benchmark.synth.generate import generate_data
from recsys.config.settings import Settings
from recsys.data import extract
from recsys.data.extract import LoadResult, extract_path, load_file, load_inbox
from recsys.db import Connection, connect, fetch_all, fetch_value
from recsys.errors import RecsysError

REF = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)  # the corpus' reference time
BAD = Path(__file__).resolve().parent / "data" / "bad"

ISO = "expected an ISO 8601 timestamp"
FUTURE = "timestamp is in the future"
MISSING = "required value is missing"
WHOLE = "expected a whole number"
NUMBER = "expected a number"
BOOL = "expected true or false"
FORMULA = "formula cell: values must be literal"

EVENT_HEADER = "event_id,user_id,session_id,timestamp,action,product_category,channel,amount"


# --------------------------------------------------------------------------------------------
# Helpers


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _write(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _load(db: Connection, settings: Settings, path: Path, **kw: Any) -> LoadResult:
    return load_file(db, settings, path, reference_at=kw.pop("reference_at", REF), **kw)


def _truncate(db: Connection) -> None:
    with db.cursor() as cur:
        cur.execute(
            "truncate recsys.load_rejects, recsys.load_log, recsys.behavior_events, recsys.users, "
            "recsys.offer_history restart identity"
        )
    db.commit()


def _events(db: Connection) -> list[tuple[str, str | None, str, str | None]]:
    """(event_id, event_at, action, amount) of every loaded event, by time and id."""
    rows = fetch_all(
        db, "select event_id, event_at, action, amount from recsys.behavior_events order by event_at, event_id"
    )
    return [(r["event_id"], _iso(r["event_at"]), r["action"], _text(r["amount"])) for r in rows]


def _users(db: Connection) -> list[tuple[int, bool, bool, bool, str]]:
    """(user_id, email_opt_in, sms_opt_in, push_opt_in, timezone) of every user."""
    rows = fetch_all(
        db, "select user_id, email_opt_in, sms_opt_in, push_opt_in, timezone from recsys.users order by user_id"
    )
    return [tuple(r.values()) for r in rows]  # type: ignore[misc]


def _offers(db: Connection) -> list[tuple[str, str, str, str, float | None, str | None]]:
    """(offer_id, offer_type, channel, timing, propensity, revenue) of every past offer."""
    rows = fetch_all(
        db,
        "select offer_id, offer_type, channel, timing, propensity, revenue from recsys.offer_history order by 1",
    )
    return [
        (r["offer_id"], r["offer_type"], r["channel"], r["timing"], r["propensity"], _text(r["revenue"])) for r in rows
    ]


def _rejects(db: Connection) -> list[dict[str, Any]]:
    return fetch_all(
        db,
        "select load_id, file_name, sheet, row_number, column_name, value, reason from recsys.load_rejects "
        "order by sheet, row_number, column_name",
    )


def _table_snapshot(db: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every loaded row of the three target tables, without load bookkeeping."""
    queries = {
        "events": "select event_id, user_id, session_id, event_at, action, product_category, channel, amount, "
        "discount_used, free_shipping_used from recsys.behavior_events order by event_at, event_id",
        "users": "select user_id, email_opt_in, sms_opt_in, push_opt_in, email, phone, push_token, timezone, "
        "first_name, updated_at from recsys.users order by user_id",
        "offers": "select offer_id, user_id, sent_at, offer_type, offer_value, channel, timing, propensity, opened, "
        "clicked, converted, revenue from recsys.offer_history order by offer_id",
    }
    return {name: [tuple(r.values()) for r in fetch_all(db, q)] for name, q in queries.items()}


# --------------------------------------------------------------------------------------------
# The corpus of bad files


@dataclass(frozen=True)
class Case:
    """What loading one corpus file must give (with reference time REF, into empty tables)."""

    refused: str | None = None
    """For a refused file: a part of the message (which must also start with the file name)."""
    rejects: tuple[tuple[str, int, str, str], ...] = ()
    """(sheet, row_number, column_name, part of the reason): exactly these rows in load_rejects."""
    events: tuple[tuple[str, str, str, str | None], ...] = ()
    """(event_id or an fnmatch pattern, event_at, action, amount): exactly these events."""
    users: tuple[tuple[int, bool, bool, bool, str], ...] = ()
    offers: tuple[tuple[str, str, str, str, float | None, str | None], ...] = ()
    duplicate: int = 0
    """Valid rows not added because the file already held them."""


NOT_A_WORKBOOK = "not a readable .xlsx workbook (corrupt, truncated or another format)"
G1 = ("g1", "2026-03-01T10:00:00Z", "view", None)
G2 = ("g2", "2026-03-01T10:05:00Z", "purchase", "12.50")

CASES: dict[str, Case] = {
    # --- refused as a whole
    "events.txt": Case(refused="unsupported file type '.txt': expected .xlsx or .csv"),
    "events.xls": Case(refused="'.xls' workbooks are not supported: save it as .xlsx"),
    "notes.csv": Case(refused="cannot tell what the file holds: name CSV files events*.csv"),
    "feedback.csv": Case(refused="feedback files are loaded by `recsys ingest-feedback`, not `extract`"),
    "corrupt.xlsx": Case(refused=NOT_A_WORKBOOK),
    "corrupt_xml.xlsx": Case(refused="corrupt_xml.xlsx, sheet events: the workbook is damaged and cannot be read"),
    "truncated.xlsx": Case(refused=f"{NOT_A_WORKBOOK}: BadZipFile"),
    "not_a_workbook.xlsx": Case(refused=f"{NOT_A_WORKBOOK}: BadZipFile"),
    "missing_sheet.xlsx": Case(refused="the workbook has no 'events' sheet (sheets: users, Sheet1)"),
    "missing_column.xlsx": Case(
        refused="missing_column.xlsx, sheet events: missing required column(s) action; "
        "found: event_id, user_id, session_id, timestamp"
    ),
    "empty_sheet.xlsx": Case(refused="sheet events: the sheet is empty (expected a header row)"),
    "events_missing_column.csv": Case(
        refused="missing required column(s) session_id; found: event_id, user_id, timestamp, action"
    ),
    "events_empty.csv": Case(refused="the file is empty (expected a header row)"),
    "events_semicolon.csv": Case(refused="(the header looks semicolon-separated; expected commas)"),
    "events_duplicate_header.csv": Case(refused="column 'user_id' appears twice in the header"),
    "events_ragged.csv": Case(refused='cannot be read as CSV: line 3: missing data for column "free_shipping_used"'),
    "events_unterminated_quote.csv": Case(refused="cannot be read as CSV: line 6: unterminated CSV quoted field"),
    "events_latin1.csv": Case(
        refused="cannot be read as CSV: line 3: not valid UTF-8 (0xe9 0x63 0x6f); save the file as UTF-8"
    ),
    "events_utf16.csv": Case(refused="line 1 is not valid UTF-8 (byte 0); save the file as UTF-8"),
    "events_nul_in_header.csv": Case(refused=r"missing required column(s) action; found: event_id, user_id, "),
    # --- loaded, with exact rejects
    "events_text_in_numbers.csv": Case(
        rejects=(
            ("events", 3, "user_id", WHOLE),
            ("events", 4, "user_id", WHOLE),
            ("events", 5, "amount", NUMBER),
            ("events", 6, "amount", NUMBER),
            ("events", 7, "discount_used", BOOL),
            ("events", 10, "amount", NUMBER),
            ("events", 10, "user_id", WHOLE),
        ),
        events=(
            ("t1", "2026-03-01T10:00:00Z", "view", None),
            ("t7", "2026-03-01T10:06:00Z", "purchase", "19.99"),
            ("t8", "2026-03-01T10:07:00Z", "view", None),
        ),
    ),
    "events_unknown_action.csv": Case(
        rejects=(
            ("events", 3, "action", "unknown action: expected view, add_to_cart or purchase"),
            ("events", 6, "action", MISSING),
            ("events", 7, "action", "unknown action"),
        ),
        events=(
            ("a1", "2026-03-01T10:00:00Z", "view", None),
            ("a3", "2026-03-01T10:02:00Z", "view", None),
            ("a4", "2026-03-01T10:03:00Z", "add_to_cart", None),
        ),
    ),
    "events_negative_amount.csv": Case(
        rejects=(
            ("events", 2, "amount", "amount must be >= 0"),
            ("events", 4, "amount", "amount must be >= 0"),
            ("events", 5, "amount", "amount must be >= 0"),
            ("events", 6, "amount", "amount is implausibly large"),
            ("events", 7, "amount", "amount is implausibly large"),
        ),
        events=(
            ("n2", "2026-03-01T10:01:00Z", "purchase", "0.00"),
            ("n7", "2026-03-01T10:06:00Z", "purchase", "999999999999.99"),
            ("n8", "2026-03-01T10:07:00Z", "purchase", "10.01"),
        ),
    ),
    "events_purchase_without_amount.csv": Case(
        rejects=(
            ("events", 2, "amount", "a purchase needs an amount"),
            ("events", 3, "amount", "a purchase needs an amount"),
        ),
        events=(
            ("p3", "2026-03-01T10:02:00Z", "view", None),
            ("p4", "2026-03-01T10:03:00Z", "add_to_cart", "12.00"),
            ("p5", "2026-03-01T10:04:00Z", "purchase", "25.00"),
        ),
    ),
    "events_bad_timestamps.csv": Case(
        rejects=(
            ("events", 3, "timestamp", ISO),
            ("events", 4, "timestamp", ISO),
            ("events", 5, "timestamp", ISO),
            ("events", 6, "timestamp", ISO),
            ("events", 7, "timestamp", FUTURE),
            ("events", 10, "timestamp", FUTURE),
            ("events", 11, "timestamp", MISSING),
            ("events", 12, "timestamp", FUTURE),
            ("events", 14, "timestamp", ISO),
        ),
        events=(
            ("b1", "2026-03-01T10:00:00Z", "view", None),
            ("b12", "2026-03-01T10:00:00Z", "view", None),
            ("b7", "2026-06-01T00:00:00Z", "view", None),
            ("b8", "2026-06-01T00:00:00Z", "view", None),
        ),
    ),
    "events_duplicate_rows.csv": Case(
        events=(
            ("d1", "2026-03-01T10:00:00Z", "view", None),
            ("d2", "2026-03-01T10:01:00Z", "view", None),
            ("d:*:1", "2026-03-01T11:00:00Z", "view", None),
            ("d:*:2", "2026-03-01T11:00:00Z", "view", None),
            ("d:*:1", "2026-03-01T11:05:00Z", "purchase", "9.90"),
        ),
        duplicate=2,
    ),
    "events_cr_line_endings.csv": Case(events=(G1, G2)),
    "formula.xlsx": Case(
        rejects=(
            ("events", 2, "amount", FORMULA),
            ("events", 3, "user_id", FORMULA),
            ("events", 6, "amount", FORMULA),
            ("events", 6, "user_id", FORMULA),
        ),
        events=(
            ("f3", "2026-03-01T10:02:00Z", "view", None),
            ("f4", "2026-03-01T10:03:00Z", "purchase", "15.50"),
        ),
    ),
    "bad_rows.xlsx": Case(
        rejects=(
            ("events", 3, "user_id", WHOLE),
            ("events", 5, "amount", "amount must be >= 0"),
            ("events", 7, "timestamp", FUTURE),
            ("events", 8, "amount", NUMBER),
            ("offers", 3, "offer_type", "unknown offer_type"),
            ("users", 3, "user_id", WHOLE),
        ),
        events=(
            ("x1", "2026-03-01T10:00:00Z", "view", None),
            ("x4", "2026-03-01T11:00:00Z", "purchase", "19.99"),
        ),
        users=((1, True, False, False, "Europe/Paris"),),
        offers=(("o1", "discount", "email", "immediate", 0.5, None),),
    ),
    "users_bad.csv": Case(
        rejects=(
            ("users", 4, "timezone", "unknown time zone: expected an IANA name"),
            ("users", 5, "email_opt_in", BOOL),
            ("users", 6, "email", "not an email address"),
            ("users", 7, "user_id", WHOLE),
            ("users", 8, "user_id", MISSING),
            ("users", 9, "updated_at", FUTURE),
            ("users", 10, "timezone", "unknown time zone"),
            ("users", 10, "updated_at", ISO),
        ),
        users=((1, True, False, False, "Europe/Berlin"), (2, True, False, True, "UTC")),
    ),
    "offers_bad.csv": Case(
        rejects=(
            ("offers", 3, "offer_type", "unknown offer_type"),
            ("offers", 4, "channel", "unknown channel: expected email, sms or push"),
            ("offers", 5, "timing", "unknown timing"),
            ("offers", 6, "propensity", "propensity must be in (0, 1]"),
            ("offers", 7, "propensity", "propensity must be in (0, 1]"),
            ("offers", 8, "propensity", NUMBER),
            ("offers", 10, "offer_value", "offer_value must be > 0"),
            ("offers", 11, "revenue", "revenue must be >= 0"),
            ("offers", 12, "offer_id", MISSING),
            ("offers", 13, "sent_at", FUTURE),
            ("offers", 14, "opened", BOOL),
        ),
        offers=(
            ("o1", "discount", "email", "immediate", 0.25, "0.00"),
            ("o14", "recommendation", "push", "delay_6hours", None, "12.35"),
            ("o8", "free_shipping", "sms", "delay_1hour", 1.0, None),
        ),
    ),
}


def _corpus_recipes() -> Any:
    spec = importlib.util.spec_from_file_location("make_bad_inputs", BAD.parent / "make_bad_inputs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_corpus_files_match_their_recipes_and_cases() -> None:
    recipes = _corpus_recipes()
    on_disk = {p.name for p in BAD.iterdir()} - {"README.md"}
    assert on_disk == set(recipes.CORPUS) == set(CASES)
    for name, (_, build) in recipes.CORPUS.items():
        assert (BAD / name).read_bytes() == build(), f"{name} differs from its recipe: run make_bad_inputs.py"
    assert (BAD / "README.md").read_text(encoding="utf-8") == recipes.readme()


@pytest.mark.parametrize("name", list(CASES))
def test_corpus_file(db: Connection, settings: Settings, name: str) -> None:
    case = CASES[name]
    result = _load(db, settings, BAD / name)
    logged = fetch_all(db, "select * from recsys.load_log")
    assert len(logged) == 1
    entry = logged[0]

    if case.refused is not None:
        assert result.status == "refused", result.describe()
        assert result.message.startswith(name), result.message
        assert case.refused in result.message
        assert result.describe() == f"{name}: refused, nothing loaded: {result.message.removeprefix(name + ': ')}"
        assert (entry["status"], entry["message"], entry["file_name"]) == ("refused", result.message, name)
        assert (entry["rows_read"], entry["rows_loaded"]) == (0, 0)
    else:
        assert result.status == "loaded", result.message
        assert (entry["status"], entry["load_id"], entry["file_name"]) == ("loaded", result.load_id, name)

    rejects = _rejects(db)
    expected = sorted(case.rejects)
    assert [(r["sheet"], r["row_number"], r["column_name"]) for r in rejects] == [e[:3] for e in expected]
    for r, e in zip(rejects, expected, strict=True):
        assert e[3] in r["reason"], (r, e)
        assert (r["load_id"], r["file_name"]) == (result.load_id, name)
        # the offending value is kept, unless there was none
        assert (r["value"] is None) == (r["reason"] in (MISSING, "a purchase needs an amount")), r

    events = _events(db)
    assert len(events) == len(case.events)
    for got, want in zip(events, case.events, strict=True):
        assert fnmatch.fnmatchcase(got[0], want[0]) and got[1:] == want[1:], (got, want)
    assert _users(db) == list(case.users)
    assert _offers(db) == list(case.offers)

    # every row read is accounted for: loaded, rejected (once, however many problems) or a duplicate
    rejected_rows = len({(s, n) for s, n, _, _ in case.rejects})
    loaded = len(case.events) + len(case.users) + len(case.offers)
    assert (entry["rows_loaded"], entry["rows_rejected"], entry["rows_duplicate"]) == (
        (0, 0, 0) if case.refused else (loaded, rejected_rows, case.duplicate)
    )
    assert entry["rows_read"] == entry["rows_loaded"] + entry["rows_rejected"] + entry["rows_duplicate"]
    assert (result.total("loaded"), result.total("rejected")) == (entry["rows_loaded"], entry["rows_rejected"])


def test_loaded_corpus_values(db: Connection, settings: Settings) -> None:
    """Beyond the keys: what the valid rows of the bad files were loaded as."""
    _load(db, settings, BAD / "users_bad.csv")
    users = fetch_all(
        db, "select user_id, email, phone, push_token, first_name, updated_at from recsys.users order by user_id"
    )
    assert [tuple(u.values()) for u in users] == [
        (1, "ann@example.com", "+15550001", None, "Ann", _utc("2026-01-01T00:00:00Z")),
        (2, "bob@example.com", None, "tok2", "Bob", None),
    ]
    _load(db, settings, BAD / "offers_bad.csv")
    o1 = fetch_all(db, "select * from recsys.offer_history where offer_id = 'o1'")[0]
    assert (o1["user_id"], o1["sent_at"], o1["offer_value"]) == (1, _utc("2026-03-01T09:00:00Z"), Decimal("10.00"))
    assert (o1["opened"], o1["clicked"], o1["converted"]) == (True, True, False)
    _load(db, settings, BAD / "events_text_in_numbers.csv")
    t7 = fetch_all(db, "select * from recsys.behavior_events where event_id = 't7'")[0]
    assert (t7["user_id"], t7["session_id"], t7["product_category"], t7["channel"]) == (3, "s3", "books", "email")
    assert (t7["discount_used"], t7["free_shipping_used"]) == (True, False)
    t8 = fetch_all(db, "select user_id from recsys.behavior_events where event_id = 't8'")[0]
    assert t8["user_id"] == 4  # "4.0" reads as 4


# --------------------------------------------------------------------------------------------
# Headers and formats


def test_headers_match_case_insensitively_and_extra_columns_are_ignored(
    db: Connection, settings: Settings, tmp_path: Path
) -> None:
    path = _write(
        tmp_path / "Events_March.CSV",
        "Coupon Code, ACTION ,User_ID,Session-Id,TimeStamp,Event_ID,AMOUNT,notes",
        "X1,Purchase,7,s9,2026-03-01T10:00:00Z,h1,5.5,hello",
        "X2,view,7,s9,2026-03-01T10:01:00Z,h2,,",
    )
    result = _load(db, settings, path)
    assert result.status == "loaded"
    assert result.sheets["events"].as_dict() == {"read": 2, "loaded": 2, "rejected": 0, "duplicate": 0, "dropped": 0}
    assert _events(db) == [
        ("h1", "2026-03-01T10:00:00Z", "purchase", "5.50"),
        ("h2", "2026-03-01T10:01:00Z", "view", None),
    ]
    assert fetch_all(db, "select distinct user_id, session_id from recsys.behavior_events") == [
        {"user_id": 7, "session_id": "s9"}
    ]
    assert _rejects(db) == []


def test_csv_and_xlsx_give_the_same_rows(db: Connection, settings: Settings, tmp_path: Path) -> None:
    end = dt.date(2026, 3, 1)
    book = generate_data(users=40, days=10, seed=5, out=tmp_path / "shop.xlsx", end_date=end)
    folder = generate_data(users=40, days=10, seed=5, out=tmp_path / "csv", end_date=end)
    assert book.counts == folder.counts and book.counts["events"] > 0 and book.counts["offers"] > 0

    (xlsx_result,) = extract_path(db, settings, tmp_path / "shop.xlsx", reference_at=REF)
    assert xlsx_result.status == "loaded" and xlsx_result.total("rejected") == 0
    from_xlsx = _table_snapshot(db)
    _truncate(db)
    csv_results = extract_path(db, settings, tmp_path / "csv", reference_at=REF)
    assert [r.status for r in csv_results] == ["loaded"] * 3
    from_csv = _table_snapshot(db)

    assert {k: len(v) for k, v in from_xlsx.items()} == book.counts
    assert from_xlsx["events"] == from_csv["events"]
    assert from_xlsx["users"] == from_csv["users"]
    # openpyxl writes a float with 16 significant digits ("%.16g"), so a workbook can hold a
    # propensity one unit in the last place away from the CSV's shortest round-trip text
    propensity = 7
    for a, b in zip(from_xlsx["offers"], from_csv["offers"], strict=True):
        assert a[:propensity] + a[propensity + 1 :] == b[:propensity] + b[propensity + 1 :]
        assert a[propensity] == pytest.approx(b[propensity], rel=1e-15)
    assert _rejects(db) == []


# --------------------------------------------------------------------------------------------
# Idempotency


def test_same_file_twice_is_skipped_and_forcing_adds_nothing(
    db: Connection, settings: Settings, tmp_path: Path
) -> None:
    lines = (
        EVENT_HEADER,
        "e1,1,s1,2026-03-01T10:00:00Z,view,books,web,",
        "e2,1,s1,2026-03-01T10:01:00Z,purchase,books,web,9.99",
        ",1,s1,2026-03-01T10:02:00Z,view,toys,web,",
    )
    path = _write(tmp_path / "events.csv", *lines)
    first = _load(db, settings, path)
    assert first.status == "loaded" and first.total("loaded") == 3
    before = _table_snapshot(db)

    second = _load(db, settings, path)
    assert second.status == "skipped"
    assert second.load_id == first.load_id
    assert f"same content already loaded as load {first.load_id}" in second.message
    # the checksum, not the name, identifies a file
    renamed = _load(db, settings, shutil.copy(path, tmp_path / "events_copy.csv"))
    assert (renamed.status, renamed.load_id) == ("skipped", first.load_id)
    assert fetch_value(db, "select count(*) from recsys.load_log") == 1

    forced = _load(db, settings, path, force=True)
    assert forced.status == "loaded"
    assert forced.sheets["events"].as_dict() == {"read": 3, "loaded": 0, "rejected": 0, "duplicate": 3, "dropped": 0}
    assert _table_snapshot(db) == before
    assert fetch_value(db, "select array_agg(distinct load_id) from recsys.behavior_events") == [first.load_id]


def test_overlapping_file_adds_only_new_rows(db: Connection, settings: Settings, tmp_path: Path) -> None:
    rows = [f"e{i},1,s1,2026-03-0{i}T10:00:00Z,view,books,web," for i in range(1, 6)]
    first = _load(db, settings, _write(tmp_path / "events_a.csv", EVENT_HEADER, *rows[:3]))
    second = _load(db, settings, _write(tmp_path / "events_b.csv", EVENT_HEADER, *rows[1:]))
    assert second.sheets["events"].as_dict() == {"read": 4, "loaded": 2, "rejected": 0, "duplicate": 2, "dropped": 0}
    loaded = fetch_all(db, "select event_id, load_id from recsys.behavior_events order by event_id")
    assert [(r["event_id"], r["load_id"]) for r in loaded] == [
        ("e1", first.load_id),
        ("e2", first.load_id),
        ("e3", first.load_id),
        ("e4", second.load_id),
        ("e5", second.load_id),
    ]


def test_a_load_analyzes_the_tables_it_changed_a_lot(db: Connection, settings: Settings, tmp_path: Path) -> None:
    # The readers after a load (the features, scoring) plan on the statistics the load leaves: it
    # analyzes a table it changed by more rows than autovacuum's rule asks (its threshold + its scale
    # factor x the rows at the last analyze), whether or not autovacuum runs. Autovacuum is kept off
    # the partition here, so that every analyze seen is the load's.
    partition = "behavior_events_202604"
    threshold = int(fetch_value(db, "select current_setting('autovacuum_analyze_threshold')::int"))
    scale = float(fetch_value(db, "select current_setting('autovacuum_analyze_scale_factor')::float8"))
    with db.cursor() as cur:
        cur.execute("select recsys.ensure_event_partitions('2026-04-01', '2026-04-30')")
        cur.execute(f"alter table recsys.{partition} set (autovacuum_enabled = false)")
        cur.execute(f"analyze recsys.{partition}")
    db.commit()

    def rows_known() -> float:
        return fetch_value(db, "select reltuples from pg_class where oid = %s::regclass", (f"recsys.{partition}",))

    def load(name: str, n: int) -> None:
        rows = [f"{name}{i},{1 + i % 7},s{i},2026-04-{1 + i % 28:02d}T10:00:00Z,view,books,web," for i in range(n)]
        _load(db, settings, _write(tmp_path / f"events_{name}.csv", EVENT_HEADER, *rows))

    first = threshold + 150
    ask = threshold + scale * first  # changes that ask for an analyze after the first load's
    try:
        assert rows_known() == 0
        load("a", first)
        assert rows_known() == first
        load("b", 1)  # under the rule: the statistics stay as they were
        assert rows_known() == first
        load("c", int(ask) + 1)  # over it: analyzed with everything there
        assert rows_known() == first + 1 + int(ask) + 1
    finally:
        with db.cursor() as cur:
            cur.execute(f"alter table recsys.{partition} reset (autovacuum_enabled)")
        db.commit()


def test_derived_event_ids(db: Connection, settings: Settings, tmp_path: Path) -> None:
    header = "user_id,session_id,timestamp,action,amount"
    a = "1,s1,2026-03-01T10:00:00Z,view,"
    b = "1,s1,2026-03-01T10:05:00Z,purchase,20"
    c = "2,s2,2026-03-02T08:00:00Z,view,"

    first = _load(db, settings, _write(tmp_path / "events_1.csv", header, a, a, b))
    assert first.sheets["events"].as_dict() == {"read": 3, "loaded": 3, "rejected": 0, "duplicate": 0, "dropped": 0}
    ids = [e[0] for e in _events(db)]
    assert len(set(ids)) == 3
    assert all(fnmatch.fnmatchcase(i, "d:????????????????????????????????:?") for i in ids)
    a1, a2 = ids[0], ids[1]
    assert a1.endswith(":1") and a2.endswith(":2") and a1[:-2] == a2[:-2]  # same content, two events

    forced = _load(db, settings, tmp_path / "events_1.csv", force=True)
    assert (forced.total("loaded"), forced.total("duplicate")) == (0, 3)

    # a1 and b are known; c is new. Identity is content plus occurrence, so a third copy of `a`
    # in one file would be new, while one copy of it is the event already loaded.
    overlap = _load(db, settings, _write(tmp_path / "events_2.csv", header, a, b, c))
    assert (overlap.total("loaded"), overlap.total("duplicate")) == (1, 2)
    three = _load(db, settings, _write(tmp_path / "events_3.csv", header, a, a, a))
    assert (three.total("loaded"), three.total("duplicate")) == (1, 2)
    ids_after = [e[0] for e in _events(db)]
    assert len(ids_after) == 5 and set(ids) < set(ids_after)
    assert f"{a1[:-2]}:3" in ids_after

    # The derived id reads the values, not their spelling: the same rows from a workbook (Excel
    # datetimes, numbers) are the events already loaded.
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "events"
    ws.append(header.split(","))
    ws.append([1, "s1", dt.datetime(2026, 3, 1, 10, 0), "view", None])
    ws.append([1, "s1", "2026-03-01T11:05:00+01:00", "Purchase", 20.0])
    wb.save(tmp_path / "same_rows.xlsx")
    same = _load(db, settings, tmp_path / "same_rows.xlsx")
    assert (same.total("loaded"), same.total("duplicate")) == (0, 2)


# --------------------------------------------------------------------------------------------
# Users and past offers


def test_users_upsert_rules(db: Connection, settings: Settings, tmp_path: Path) -> None:
    header = "user_id,email_opt_in,timezone,first_name,updated_at"
    _load(
        db,
        settings,
        _write(
            tmp_path / "users_a.csv",
            header,
            "1,true,Europe/Berlin,A1,2026-01-02T00:00:00Z",
            "2,true,,A2,2026-01-02T00:00:00Z",
            "3,true,,A3,",
            "4,true,,A4,2026-01-02T00:00:00Z",
            "5,true,,A5,2026-01-02T00:00:00Z",
        ),
    )
    second = _load(
        db,
        settings,
        _write(
            tmp_path / "users_b.csv",
            header,
            "1,false,,B1,2026-01-01T00:00:00Z",  # older than the table's: loses
            "2,false,,B2,2026-01-03T00:00:00Z",  # newer: wins
            "3,false,,B3,2025-01-01T00:00:00Z",  # the table's has none: the later load wins
            "4,false,,B4,",  # this one has none: the later load wins
            "5,false,,B5,2026-01-02T00:00:00Z",  # equal: the later load wins
            "6,true,,C1,2026-01-05T00:00:00Z",
            "6,false,,C2,2026-01-07T00:00:00Z",  # newest in the file
            "6,true,,C3,2026-01-06T00:00:00Z",
            "7,true,,D1,2026-01-05T00:00:00Z",  # a row with updated_at beats a later one without
            "7,false,,D2,",
            "8,true,,E1,",
            "8,false,,E2,",  # neither has one: the later row
        ),
    )
    assert second.sheets["users"].as_dict() == {"read": 12, "loaded": 7, "rejected": 0, "duplicate": 5, "dropped": 0}
    rows = fetch_all(
        db,
        "select user_id, first_name, email_opt_in, sms_opt_in, push_opt_in, timezone, updated_at "
        "from recsys.users order by user_id",
    )
    # consent columns absent from the file read as no consent; no timezone reads as UTC
    assert [tuple(r.values()) for r in rows] == [
        (1, "A1", True, False, False, "Europe/Berlin", _utc("2026-01-02T00:00:00Z")),
        (2, "B2", False, False, False, "UTC", _utc("2026-01-03T00:00:00Z")),
        (3, "B3", False, False, False, "UTC", _utc("2025-01-01T00:00:00Z")),
        (4, "B4", False, False, False, "UTC", None),
        (5, "B5", False, False, False, "UTC", _utc("2026-01-02T00:00:00Z")),
        (6, "C2", False, False, False, "UTC", _utc("2026-01-07T00:00:00Z")),
        (7, "D1", True, False, False, "UTC", _utc("2026-01-05T00:00:00Z")),
        (8, "E2", False, False, False, "UTC", None),
    ]
    load_ids = {r["user_id"]: r["load_id"] for r in fetch_all(db, "select user_id, load_id from recsys.users")}
    assert load_ids[1] != second.load_id and all(load_ids[u] == second.load_id for u in range(2, 9))
    before = {r["user_id"]: r["loaded_at"] for r in fetch_all(db, "select user_id, loaded_at from recsys.users")}

    # sent again as stored (the spelling aside), a user stays as it was and counts as already there
    third = _load(
        db,
        settings,
        _write(tmp_path / "users_c.csv", header, "2, no ,, B2 ,2026-01-03T01:00:00+01:00", "3,true,,B3,2025-01-01"),
    )
    assert third.sheets["users"].as_dict() == {"read": 2, "loaded": 1, "rejected": 0, "duplicate": 1, "dropped": 0}
    after = {
        r["user_id"]: r for r in fetch_all(db, "select user_id, email_opt_in, load_id, loaded_at from recsys.users")
    }
    assert (after[2]["email_opt_in"], after[2]["load_id"], after[2]["loaded_at"]) == (False, second.load_id, before[2])
    assert (after[3]["email_opt_in"], after[3]["load_id"]) == (True, third.load_id)
    assert after[3]["loaded_at"] > before[3]


def test_users_bad_timezone_rejected_and_default_utc(db: Connection, settings: Settings, tmp_path: Path) -> None:
    result = _load(
        db,
        settings,
        _write(
            tmp_path / "users.csv",
            "user_id,sms_opt_in,timezone",
            "1,true,America/New_York",
            "2,true,",
            "3,true,Not/AZone",
            "4,true,   ",
        ),
    )
    assert result.sheets["users"].as_dict() == {"read": 4, "loaded": 3, "rejected": 1, "duplicate": 0, "dropped": 0}
    assert [(r["row_number"], r["column_name"], r["value"]) for r in _rejects(db)] == [(4, "timezone", "Not/AZone")]
    assert _users(db) == [
        (1, False, True, False, "America/New_York"),
        (2, False, True, False, "UTC"),
        (4, False, True, False, "UTC"),
    ]


def test_offers_load_into_offer_history_and_later_loads_complete_them(
    db: Connection, settings: Settings, tmp_path: Path
) -> None:
    header = "offer_id,user_id,sent_at,offer_type,offer_value,channel,timing,propensity,opened,converted,revenue"
    first = _load(
        db,
        settings,
        _write(
            tmp_path / "offers_1.csv",
            header,
            "o1,1,2026-03-01T09:00:00+01:00,discount,15,email,immediate,0.2,,,",
            "o2,2,2026-03-01T09:00:00Z,bundle,2,push,delay_1hour,,false,false,0",
        ),
    )
    later = _load(
        db,
        settings,
        _write(tmp_path / "offers_2.csv", header, "o1,1,2026-03-01T08:00:00Z,discount,15,email,immediate,0.2,1,1,42.5"),
    )
    assert later.sheets["offers"].as_dict() == {"read": 1, "loaded": 1, "rejected": 0, "duplicate": 0, "dropped": 0}
    rows = fetch_all(
        db,
        "select offer_id, user_id, sent_at, offer_value, propensity, opened, clicked, converted, revenue, load_id "
        "from recsys.offer_history order by offer_id",
    )
    assert [tuple(r.values()) for r in rows] == [
        (
            "o1",
            1,
            _utc("2026-03-01T08:00:00Z"),
            Decimal("15.00"),
            0.2,
            True,
            None,
            True,
            Decimal("42.50"),
            later.load_id,
        ),
        (
            "o2",
            2,
            _utc("2026-03-01T09:00:00Z"),
            Decimal("2.00"),
            None,
            False,
            None,
            False,
            Decimal("0.00"),
            first.load_id,
        ),
    ]


def test_an_offer_sent_again_unchanged_is_already_present_and_keeps_its_load(
    db: Connection, settings: Settings, tmp_path: Path
) -> None:
    header = "offer_id,user_id,sent_at,offer_type,offer_value,channel,timing,propensity,opened,converted,revenue"
    o1 = "o1,1,2026-03-01T09:00:00Z,discount,15,email,immediate,0.2,,,"
    o2 = "o2,2,2026-03-01T09:00:00Z,bundle,2,push,delay_1hour,,false,false,0"
    first = _load(db, settings, _write(tmp_path / "offers_1.csv", header, o1, o2))
    # o1 as it was (the value spelt otherwise, the same once typed), o2 with its outcome, o3 new
    again = _load(
        db,
        settings,
        _write(
            tmp_path / "offers_2.csv",
            header,
            "o1, 1 ,2026-03-01T10:00:00+01:00,discount,15.00,email,immediate,0.20,,,",
            "o2,2,2026-03-01T09:00:00Z,bundle,2,push,delay_1hour,,true,true,30",
            "o3,3,2026-03-02T09:00:00Z,bundle,2,sms,immediate,,,,",
        ),
    )
    assert again.sheets["offers"].as_dict() == {"read": 3, "loaded": 2, "rejected": 0, "duplicate": 1, "dropped": 0}
    rows = fetch_all(db, "select offer_id, opened, converted, revenue, load_id from recsys.offer_history order by 1")
    assert [tuple(r.values()) for r in rows] == [
        ("o1", None, None, None, first.load_id),
        ("o2", True, True, Decimal("30.00"), again.load_id),
        ("o3", None, None, None, again.load_id),
    ]
    same = _load(db, settings, _write(tmp_path / "offers_3.csv", header, o1, o2), force=True)
    assert same.sheets["offers"].as_dict() == {"read": 2, "loaded": 1, "rejected": 0, "duplicate": 1, "dropped": 0}


def test_a_load_waits_for_another_writer_of_the_same_new_offer(
    db: Connection, settings: Settings, tmp_path: Path, migrated_url: str
) -> None:
    """Another transaction has inserted offer o1 and not committed: the load waits for it, then
    finds o1 there (without the lock its insert would fail on the offer's key once the other
    commits)."""
    header = "offer_id,user_id,sent_at,offer_type,offer_value,channel,timing"
    path = _write(tmp_path / "offers.csv", header, "o1,1,2026-03-01T09:00:00Z,bundle,2,sms,immediate")
    results: list[LoadResult] = []
    with connect(migrated_url) as other:
        with other.cursor() as cur:
            cur.execute(
                "insert into recsys.offer_history (offer_id, user_id, sent_at, offer_type, offer_value, channel, "
                "timing, load_id) values ('o1', 1, '2026-03-01T09:00:00Z', 'bundle', 2, 'sms', 'immediate', 0)"
            )
        loader = threading.Thread(target=lambda: results.append(_load(db, settings, path)))
        loader.start()
        loader.join(timeout=1.0)
        waited = loader.is_alive()
        other.commit()
        loader.join(timeout=60)
    assert waited, "the load did not wait for the other writer"
    assert results, "the load failed (see the thread's exception above)"
    assert results[0].sheets["offers"].as_dict() == {
        "read": 1, "loaded": 0, "rejected": 0, "duplicate": 1, "dropped": 0
    }  # fmt: skip
    assert fetch_value(db, "select count(*) from recsys.offer_history") == 1


# --------------------------------------------------------------------------------------------
# Reference time and timestamps


def test_reference_time_bounds_every_timestamp(db: Connection, settings: Settings, tmp_path: Path) -> None:
    ref = dt.datetime(2026, 3, 1, 10, 0, 0, 500_000, tzinfo=dt.UTC)
    folder = tmp_path / "in"
    _write(
        folder / "events.csv",
        EVENT_HEADER,
        "at,1,s1,2026-03-01T10:00:00.5Z,view,,,",
        "after,1,s1,2026-03-01T10:00:00.500001Z,view,,,",
        "before,1,s1,2026-03-01T11:00:00.4+01:00,view,,,",
    )
    _write(folder / "users.csv", "user_id,updated_at", "1,2026-03-01T10:00:00.5Z", "2,2026-03-01T10:00:01Z")
    _write(
        folder / "offers.csv",
        "offer_id,user_id,sent_at,offer_type,offer_value,channel,timing",
        "o1,1,2026-03-01T10:00:00.5Z,discount,5,sms,immediate",
        "o2,1,2026-03-01T10:00:01Z,discount,5,sms,immediate",
    )
    results = extract_path(db, settings, folder, reference_at=ref)
    assert [r.status for r in results] == ["loaded"] * 3
    assert [(r["sheet"], r["row_number"], r["column_name"]) for r in _rejects(db)] == [
        ("events", 3, "timestamp"),
        ("offers", 3, "sent_at"),
        ("users", 3, "updated_at"),
    ]
    assert all(FUTURE in r["reason"] for r in _rejects(db))
    assert [e[0] for e in _events(db)] == ["before", "at"]
    assert [u[0] for u in _users(db)] == [1]
    assert [o[0] for o in _offers(db)] == ["o1"]
    assert fetch_value(db, "select array_agg(distinct reference_at) from recsys.load_log") == [ref]


TIMESTAMPS = {
    "z": ("2026-03-01T10:00:00Z", "2026-03-01T10:00:00+00:00"),
    "naive": ("2026-03-01T10:00:00", "2026-03-01T10:00:00+00:00"),
    "ist": ("2026-03-01T10:00:00+05:30", "2026-03-01T04:30:00+00:00"),
    "space": ("2026-03-01 10:00:00-02:00", "2026-03-01T12:00:00+00:00"),
    "date": ("2026-03-01", "2026-03-01T00:00:00+00:00"),
    "fraction": ("2026-03-01T10:00:00.25Z", "2026-03-01T10:00:00.250000+00:00"),
    "minutes": ("2026-03-01T23:30+01", "2026-03-01T22:30:00+00:00"),
}


def _event_times(db: Connection) -> dict[str, dt.datetime]:
    return {
        r["event_id"]: r["event_at"] for r in fetch_all(db, "select event_id, event_at from recsys.behavior_events")
    }


def test_timestamp_fast_path_and_fallback_agree(
    db: Connection, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [f"{k},1,s1,{v},view,,," for k, (v, _) in TIMESTAMPS.items()]
    clean = _write(tmp_path / "events_clean.csv", EVENT_HEADER, *rows)
    expected = {k: dt.datetime.fromisoformat(v) for k, (_, v) in TIMESTAMPS.items()}

    # the fast path: one plain cast per value
    assert _load(db, settings, clean).total("rejected") == 0
    assert _event_times(db) == expected

    # the exception-safe parser alone, on the same file
    _truncate(db)

    def safe_only(cur: Any, check_sql: str, params: dict[str, Any]) -> None:
        cur.execute(check_sql, params)

    with monkeypatch.context() as m:
        m.setattr(extract, "_run_check", safe_only)
        assert _load(db, settings, clean).total("rejected") == 0
    assert _event_times(db) == expected

    # one impossible date makes the fast statement fail: the fallback rejects exactly that row
    _truncate(db)
    bad = _write(
        tmp_path / "events_bad.csv", EVENT_HEADER, *rows[:3], "feb30,1,s1,2026-02-30T10:00:00Z,view,,,", *rows[3:]
    )
    result = _load(db, settings, bad)
    assert result.sheets["events"].as_dict() == {"read": 8, "loaded": 7, "rejected": 1, "duplicate": 0, "dropped": 0}
    assert [(r["row_number"], r["column_name"], r["value"]) for r in _rejects(db)] == [
        (5, "timestamp", "2026-02-30T10:00:00Z")
    ]
    assert _event_times(db) == expected


def test_cast_and_parse_functions_agree(db: Connection) -> None:
    readable = [v for v, _ in TIMESTAMPS.values()] + ["2026-12-31T23:59:59.999999-12:00", "2024-02-29"]
    for value in readable:
        row = fetch_all(
            db,
            "select recsys.cast_iso_timestamp(%(v)s) as fast, recsys.parse_iso_timestamp(%(v)s) as safe",
            {"v": value},
        )[0]
        assert row["fast"] == row["safe"] is not None, value
    for value in ["2026-02-30T10:00:00Z", "2025-02-29", "2026-01-01T25:00:00Z", "abcd-ef-gh"]:
        assert fetch_value(db, "select recsys.parse_iso_timestamp(%s)", (value,)) is None, value
    # shapes that are not ISO dates never reach the cast, so neither function reads them
    for value in ["now", "today", "epoch", "01/03/2026", "46082.5", ""]:
        assert fetch_value(db, "select recsys.cast_iso_timestamp(%s)", (value,)) is None, value


# --------------------------------------------------------------------------------------------
# Inbox and folders


def test_load_inbox_moves_files_by_outcome(db: Connection, settings: Settings, tmp_path: Path) -> None:
    inbox = settings.inbox
    known = _write(tmp_path / "elsewhere" / "users.csv", "user_id,email_opt_in", "1,true")
    assert _load(db, settings, known).status == "loaded"
    inbox.mkdir(parents=True)
    shutil.copy(known, inbox / "users_again.csv")
    _write(inbox / "events_new.csv", EVENT_HEADER, "e1,1,s1,2026-03-01T10:00:00Z,view,,,")
    shutil.copy(BAD / "events_empty.csv", inbox / "events_empty.csv")
    _write(inbox / "readme.txt", "not input")

    results = load_inbox(db, settings, reference_at=REF)
    assert {r.path.name: r.status for r in results} == {
        "users_again.csv": "skipped",
        "events_new.csv": "loaded",
        "events_empty.csv": "refused",
    }
    assert sorted(p.name for p in (inbox / "loaded").iterdir()) == ["events_new.csv", "users_again.csv"]
    assert sorted(p.name for p in (inbox / "refused").iterdir()) == ["events_empty.csv"]
    assert sorted(p.name for p in inbox.iterdir()) == ["loaded", "readme.txt", "refused"]
    assert [e[0] for e in _events(db)] == ["e1"]
    assert fetch_all(db, "select status, file_name from recsys.load_log order by load_id") == [
        {"status": "loaded", "file_name": "users.csv"},
        {"status": "refused", "file_name": "events_empty.csv"},
        {"status": "loaded", "file_name": "events_new.csv"},
    ]

    assert load_inbox(db, settings, reference_at=REF) == []
    # a new file under a name already in loaded/ does not overwrite the old one
    _write(inbox / "events_new.csv", EVENT_HEADER, "e2,1,s1,2026-03-01T11:00:00Z,view,,,")
    (again,) = load_inbox(db, settings, reference_at=REF)
    assert again.status == "loaded"
    moved = sorted(p.name for p in (inbox / "loaded").iterdir())
    assert len(moved) == 3 and "events_new.csv" in moved
    assert (inbox / "loaded" / "events_new.csv").read_text(encoding="utf-8").count("e1,") == 1


def test_folder_loads_every_supported_file_in_order(db: Connection, settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    _write(folder / "events.csv", EVENT_HEADER, "e1,1,s1,2026-03-01T10:00:00Z,view,,,")
    _write(folder / "users.csv", "user_id,push_opt_in", "1,true")
    _write(
        folder / "offers.csv",
        "offer_id,user_id,sent_at,offer_type,offer_value,channel,timing",
        "o1,1,2026-03-01T09:00:00Z,discount,10,push,immediate",
    )
    wb = openpyxl.Workbook()
    wb.active.title = "events"
    wb.active.append(["event_id", "user_id", "session_id", "timestamp", "action"])
    wb.active.append(["w1", 2, "s2", "2026-03-01T12:00:00Z", "view"])
    wb.save(folder / "more.xlsx")
    for unrelated in ("notes.txt", "README.md", "summary.csv", ".events_hidden.csv", "~$more.xlsx"):
        _write(folder / unrelated, "user_id,session_id,timestamp,action", "9,s,2026-03-01T00:00:00Z,view")
    _write(folder / "feedback.csv", "offer_id,event,event_at", "1,opened,2026-03-01T10:00:00Z")
    _write(folder / "old" / "events.csv", EVENT_HEADER, "old1,1,s1,2026-03-01T10:00:00Z,view,,,")

    results = extract_path(db, settings, folder, reference_at=REF)
    assert [(r.path.name, r.status) for r in results] == [
        ("more.xlsx", "loaded"),
        ("users.csv", "loaded"),
        ("offers.csv", "loaded"),
        ("events.csv", "loaded"),
    ]
    assert [e[0] for e in _events(db)] == ["e1", "w1"]
    assert _users(db) == [(1, False, False, True, "UTC")]
    assert [o[0] for o in _offers(db)] == ["o1"]
    assert fetch_value(db, "select count(*) from recsys.load_log") == 4


def test_folder_or_path_that_holds_nothing_to_load(db: Connection, settings: Settings, tmp_path: Path) -> None:
    _write(tmp_path / "empty" / "notes.txt", "nothing here")
    with pytest.raises(RecsysError, match="no input files"):
        extract_path(db, settings, tmp_path / "empty", reference_at=REF)
    with pytest.raises(RecsysError, match="no such file or folder"):
        extract_path(db, settings, tmp_path / "missing.csv", reference_at=REF)
    assert fetch_value(db, "select count(*) from recsys.load_log") == 0


# --------------------------------------------------------------------------------------------
# The command line


def _cli(settings: Settings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return sender_support.run_cli(str(settings.database_url), tmp_path / "data", "extract", *args)


@pytest.mark.parametrize(
    "name", ["events.txt", "corrupt.xlsx", "corrupt_xml.xlsx", "events_latin1.csv", "events_nul_in_header.csv"]
)
def test_cli_refused_file(db: Connection, settings: Settings, tmp_path: Path, name: str) -> None:
    out = _cli(settings, tmp_path, "--source", str(BAD / name), "--reference-time", "2026-06-01T00:00:00Z")
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"{name}: refused, nothing loaded: " in lines[0] and CASES[name].refused in lines[0]  # type: ignore[operator]
    assert out.stdout.strip() == lines[0].split("recsys.data.extract: ", 1)[1]
    assert fetch_all(db, "select status, file_name from recsys.load_log") == [{"status": "refused", "file_name": name}]
    assert _table_snapshot(db) == {"events": [], "users": [], "offers": []}


def test_cli_folder_of_refused_files(db: Connection, settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "refused"
    folder.mkdir()
    names = sorted(n for n, c in CASES.items() if c.refused and extract.classify(Path(n)) not in (None, "feedback"))
    for n in names:
        shutil.copy(BAD / n, folder / n)
    out = _cli(settings, tmp_path, "--source", str(folder))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == len(names)
    assert sorted(line.split(" WARNING recsys.data.extract: ", 1)[1].split(":", 1)[0] for line in lines) == names
    assert fetch_value(db, "select count(*) from recsys.load_log where status = 'refused'") == len(names)
    assert _table_snapshot(db) == {"events": [], "users": [], "offers": []}


def test_cli_missing_source_and_rejected_rows(db: Connection, settings: Settings, tmp_path: Path) -> None:
    missing = _cli(settings, tmp_path, "--source", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"recsys extract: error: {tmp_path / 'nope.csv'}: no such file or folder"
    ]

    # rows with problems do not fail the command: they are reported and kept in load_rejects
    rejected = _cli(
        settings, tmp_path, "--source", str(BAD / "events_text_in_numbers.csv"), "--reference-time", "2026-06-01"
    )
    assert rejected.returncode == 0, rejected.stderr
    assert "Traceback" not in rejected.stderr
    assert "events 3 of 9 loaded, 6 rejected" in rejected.stdout
    assert fetch_value(db, "select count(*) from recsys.load_rejects") == 7


def test_describe_summarises_a_load(db: Connection, settings: Settings) -> None:
    result = _load(db, settings, BAD / "bad_rows.xlsx")
    text = result.describe()
    assert text.startswith(f"bad_rows.xlsx: load {result.load_id}: ")
    assert "users 1 of 2 loaded, 1 rejected; offers 1 of 2 loaded, 1 rejected; events 2 of 6 loaded, 4 rejected" in text


def test_csv_rows_are_numbered_as_a_spreadsheet_shows_them(db: Connection, settings: Settings, tmp_path: Path) -> None:
    # a quoted field spanning lines is one row: row numbers count rows (the header is row 1), not lines
    path = tmp_path / "events.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["event_id", "user_id", "session_id", "timestamp", "action", "note"])
        w.writerow(["e1", "1", "s1", "2026-03-01T10:00:00Z", "view", "two\nlines"])
        w.writerow(["e2", "bad", "s1", "2026-03-01T10:00:00Z", "view", ""])
    result = _load(db, settings, path)
    assert result.sheets["events"].as_dict() == {"read": 2, "loaded": 1, "rejected": 1, "duplicate": 0, "dropped": 0}
    assert [(r["row_number"], r["value"]) for r in _rejects(db)] == [(3, "bad")]


def test_derived_ids_keep_apart_rows_that_differ_only_in_which_column_is_empty(
    db: Connection, settings: Settings, tmp_path: Path
) -> None:
    header = "user_id,session_id,timestamp,action,product_category,channel,amount,discount_used,free_shipping_used"
    discount = _write(tmp_path / "events_1.csv", header, "3,s3,2026-03-01T12:00:00Z,purchase,,web,5.00,true,")
    shipping = _write(tmp_path / "events_2.csv", header, "3,s3,2026-03-01T12:00:00Z,purchase,,web,5.00,,true")
    category = _write(tmp_path / "events_3.csv", header, "3,s3,2026-03-01T12:00:00Z,purchase,web,,5.00,true,")
    for path in (discount, shipping, category):
        result = _load(db, settings, path)
        assert (result.total("loaded"), result.total("duplicate")) == (1, 0), path.name
    flags = fetch_all(
        db,
        "select product_category, channel, discount_used, free_shipping_used from recsys.behavior_events "
        "order by event_id",
    )
    assert sorted(tuple(map(str, r.values())) for r in flags) == sorted(
        [("None", "web", "True", "None"), ("None", "web", "None", "True"), ("web", "None", "True", "None")]
    )


def test_events_past_the_retention_window_and_overlong_ids_are_rejected(
    db: Connection, settings: Settings, tmp_path: Path
) -> None:
    # A mistyped year would otherwise create a partition for every month back to it.
    oldest = REF - dt.timedelta(days=settings.event_retention_days)
    long_id = "x" * 201
    path = _write(
        tmp_path / "events.csv",
        EVENT_HEADER,
        f"old,1,s1,{(oldest - dt.timedelta(seconds=1)).isoformat()},view,,,",
        f"edge,1,s1,{oldest.isoformat()},view,,,",
        "typo,1,s1,1926-03-01T10:00:00Z,view,,,",
        f"{long_id},1,s1,2026-03-01T10:00:00Z,view,,,",
    )
    partitions_before = fetch_value(
        db, "select count(*) from pg_inherits where inhparent = 'recsys.behavior_events'::regclass"
    )
    result = _load(db, settings, path)
    assert result.status == "loaded"
    assert [(r["row_number"], r["column_name"]) for r in _rejects(db)] == [
        (2, "timestamp"),
        (4, "timestamp"),
        (5, "event_id"),
    ]
    assert "older than the event retention window" in _rejects(db)[0]["reason"]
    assert "longer than 200 characters" in _rejects(db)[2]["reason"]
    assert [e[0] for e in _events(db)] == ["edge"]
    partitions_after = fetch_value(
        db, "select count(*) from pg_inherits where inhparent = 'recsys.behavior_events'::regclass"
    )
    assert partitions_after - partitions_before <= 1


def test_cleaning_shortcuts_give_what_trim_and_lower_give(db: Connection, settings: Settings, tmp_path: Path) -> None:
    # trim_to_null skips btrim when there is nothing to trim; it must agree with nullif(btrim(v), '')
    values = ["a", " a", "a ", "  a b  ", "", " ", "   ", "\ta\t", " \ta", "a b", None]
    for value in values:
        row = fetch_all(
            db, "select recsys.trim_to_null(%(v)s) as fast, nullif(btrim(%(v)s), '') as plain", {"v": value}
        )[0]
        assert row["fast"] == row["plain"], repr(value)
    # actions and channels spelt in lower case skip lower(); any other spelling is still cleaned
    path = _write(
        tmp_path / "events.csv",
        "event_id,user_id,session_id,timestamp,action,product_category,channel",
        "c1,1,s1,2026-03-01T10:00:00Z,view,books,web",
        "c2,1,s1,2026-03-01T10:01:00Z, View ,  books ,WEB ",
        "c3,1,s1,2026-03-01T10:02:00Z,ADD_TO_CART,,Email",
        'c4,1,s1,2026-03-01T10:03:00Z,view,"",""',
        "c5,1,s1,2026-03-01T10:04:00Z,\tview,,app",
    )
    result = _load(db, settings, path)
    assert result.sheets["events"].as_dict() == {"read": 5, "loaded": 4, "rejected": 1, "duplicate": 0, "dropped": 0}
    rows = fetch_all(db, "select event_id, action, product_category, channel from recsys.behavior_events order by 1")
    assert [tuple(r.values()) for r in rows] == [
        ("c1", "view", "books", "web"),
        ("c2", "view", "books", "web"),
        ("c3", "add_to_cart", None, "email"),
        ("c4", "view", None, None),
    ]
    assert [(r["row_number"], r["column_name"], r["value"]) for r in _rejects(db)] == [(6, "action", "\tview")]


def test_offer_cleaning_shortcuts_give_what_trim_and_lower_give(
    db: Connection, settings: Settings, tmp_path: Path
) -> None:
    # parse_bool reads the common spellings before lower(); it must agree with the full reading
    for value in ["true", "false", "TRUE", "False", "t", "F", "yes", "No", "1", "0", "1.0", "0.0", "maybe", "", None]:
        row = fetch_all(
            db,
            "select recsys.parse_bool(%(v)s) as fast, case lower(%(v)s) when 'true' then true when 't' then true "
            "when 'yes' then true when 'y' then true when '1' then true when '1.0' then true when 'false' then false "
            "when 'f' then false when 'no' then false when 'n' then false when '0' then false when '0.0' then false "
            "end as plain",
            {"v": value},
        )[0]
        assert row["fast"] == row["plain"], repr(value)
    # offer types, channels and timings spelt in lower case skip lower(); any other spelling is still cleaned
    path = _write(
        tmp_path / "offers.csv",
        "offer_id,user_id,sent_at,offer_type,offer_value,channel,timing,opened",
        "k1,1,2026-03-01T10:00:00Z,discount,10,email,immediate,true",
        "k2,1,2026-03-01T10:00:00Z, Bundle ,10,SMS ,Delay_1hour,FALSE",
        "k3,1,2026-03-01T10:00:00Z,FREE_SHIPPING,10, Push,delay_6hours, yes ",
        "k4,1,2026-03-01T10:00:00Z,discount ,10,email,immediate,",
    )
    result = _load(db, settings, path)
    assert result.sheets["offers"].as_dict() == {"read": 4, "loaded": 4, "rejected": 0, "duplicate": 0, "dropped": 0}
    assert [o[:4] for o in _offers(db)] == [
        ("k1", "discount", "email", "immediate"),
        ("k2", "bundle", "sms", "delay_1hour"),
        ("k3", "free_shipping", "push", "delay_6hours"),
        ("k4", "discount", "email", "immediate"),
    ]
    opened = fetch_all(db, "select offer_id, opened from recsys.offer_history order by 1")
    assert [r["opened"] for r in opened] == [True, False, True, None]
