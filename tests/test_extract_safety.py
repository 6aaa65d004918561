"""No silent loss on load (issue 10): what the loader does with input that used to lose rows quietly.

- a line that is exactly `\\.` (PostgreSQL's end-of-copy marker) is read as data, never as the end;
- user fields that go into message headers (first name, addresses) with line breaks are dropped,
  each with a reject, while the user's row (their consent) is still loaded;
- a file whose rows are all (or mostly) rejected is refused, with its rejects kept;
- a file still being written into the inbox is left for a later run.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any

import openpyxl

from recsys.db import Connection, fetch_all, fetch_value
from recsys.extract import LoadResult, load_file
from recsys.settings import Settings

REF = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
USER_HEADER = ("user_id", "email_opt_in", "sms_opt_in", "push_opt_in", "email", "phone", "push_token", "first_name")
EVENT_HEADER = "event_id,user_id,session_id,timestamp,action,product_category,channel,amount"


def _write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _write(path: Path, *lines: str) -> Path:
    return _write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


def _load(db: Connection, settings: Settings, path: Path, **kw: Any) -> LoadResult:
    return load_file(db, settings, path, reference_at=kw.pop("reference_at", REF), **kw)


def _event_ids(db: Connection) -> list[str]:
    return [r["event_id"] for r in fetch_all(db, "select event_id from recsys.behavior_events order by event_id")]


def _log(db: Connection) -> list[tuple[str, str, int, int]]:
    rows = fetch_all(db, "select file_name, status, rows_read, rows_loaded from recsys.load_log order by load_id")
    return [tuple(r.values()) for r in rows]  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# `\.` lines


def test_end_of_copy_marker_line_never_ends_the_file(db: Connection, settings: Settings, tmp_path: Path) -> None:
    rows = [f"e{i},1,s1,2026-03-01T10:0{i}:00Z,view,,," for i in range(1, 6)]
    path = _write(tmp_path / "events.csv", EVENT_HEADER, *rows[:2], "\\.", *rows[2:])
    result = _load(db, settings, path)
    # read as CSV, the line is a row with one field of eight: the file is refused, naming the line
    assert result.status == "refused", result.describe()
    assert "line 4" in result.message and "missing data for column" in result.message
    assert _event_ids(db) == []
    assert _log(db) == [("events.csv", "refused", 0, 0)]

    # the corrected file is not blocked by the refused one's checksum
    fixed = _write(tmp_path / "fixed" / "events.csv", EVENT_HEADER, *rows)
    assert _load(db, settings, fixed).status == "loaded"
    assert _event_ids(db) == ["e1", "e2", "e3", "e4", "e5"]


def test_end_of_copy_marker_in_every_line_style_and_at_the_end(
    db: Connection, settings: Settings, tmp_path: Path
) -> None:
    # a one-column users file: the line is a value, rejected as one; every row after it loads
    for n, (eol, tail) in enumerate([(b"\n", b""), (b"\r\n", b""), (b"\r", b""), (b"\n", b"\\.\n")]):
        body = eol.join([b"user_id", b"1", b"\\.", b"2", b"3"]) + eol + tail
        result = _load(db, settings, _write_bytes(tmp_path / f"users_{n}.csv", body))
        assert result.status == "loaded", (eol, tail, result.describe())
        assert (result.total("loaded"), result.total("rejected")) == (3, 2 if tail else 1), (eol, tail)
    assert fetch_value(db, "select array_agg(user_id order by user_id) from recsys.users") == [1, 2, 3]
    rejects = fetch_all(db, "select row_number, value, reason from recsys.load_rejects order by reject_id")
    assert {(r["row_number"], r["value"]) for r in rejects} == {(3, "\\."), (6, "\\.")}
    assert all(r["reason"] == "expected a whole number" for r in rejects)


def test_end_of_copy_marker_inside_quoted_values_is_kept(db: Connection, settings: Settings, tmp_path: Path) -> None:
    csv_path = _write(
        tmp_path / "events.csv",
        EVENT_HEADER,
        'q1,1,s1,2026-03-01T10:00:00Z,view,"books\n\\.\nand more",,',
        "q2,1,s1,2026-03-01T10:01:00Z,view,\\.,,",
        "q3,1,s1,2026-03-01T10:02:00Z,view,,,",
    )
    assert _load(db, settings, csv_path).total("loaded") == 3
    wb = openpyxl.Workbook()
    wb.active.title = "events"
    wb.active.append(["event_id", "user_id", "session_id", "timestamp", "action", "product_category"])
    wb.active.append(["w1", 1, "s1", "2026-03-01T11:00:00Z", "view", "\\."])
    wb.active.append(["w2", 1, "s1", "2026-03-01T11:01:00Z", "view", "a\n\\.\nb"])
    wb.active.append(["w3", 1, "s1", "2026-03-01T11:02:00Z", "view", None])
    wb.save(tmp_path / "shop.xlsx")
    assert _load(db, settings, tmp_path / "shop.xlsx").total("loaded") == 3
    categories = fetch_all(db, "select event_id, product_category from recsys.behavior_events order by event_id")
    assert [tuple(r.values()) for r in categories] == [
        ("q1", "books\n\\.\nand more"),
        ("q2", "\\."),
        ("q3", None),
        ("w1", "\\."),
        ("w2", "a\n\\.\nb"),
        ("w3", None),
    ]


# --------------------------------------------------------------------------------------------
# Header fields


def test_header_fields_with_line_breaks_are_dropped_and_the_user_kept(
    db: Connection, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "users.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(USER_HEADER)
        w.writerow([1, "true", "true", "false", "ann@example.com", "+15550001", "", "Ann\r\nBcc: all@example.com"])
        w.writerow([2, "false", "true", "true", "bob@example.com\nBcc: x@example.com", "+1555\r0002", "tok\n2", "Bob"])
        w.writerow([3, "true", "false", "false", "cy@example.com", "", "", "Cy\x0bde"])
        w.writerow([4, "true", "false", "false", "dee@example.com", "", "", "Dée"])
    result = _load(db, settings, path)
    assert result.status == "loaded", result.describe()
    counts = result.sheets["users"]
    assert (counts.read, counts.loaded, counts.rejected, counts.dropped) == (4, 4, 0, 3)
    assert "users 4 of 4 loaded, 3 with a field dropped" in result.describe()
    users = fetch_all(
        db,
        "select user_id, email_opt_in, sms_opt_in, push_opt_in, email, phone, push_token, first_name"
        " from recsys.users order by user_id",
    )
    assert [tuple(u.values()) for u in users] == [
        (1, True, True, False, "ann@example.com", "+15550001", None, None),
        (2, False, True, True, None, None, None, "Bob"),
        (3, True, False, False, "cy@example.com", None, None, None),
        (4, True, False, False, "dee@example.com", None, None, "Dée"),
    ]
    rejects = fetch_all(
        db,
        "select file_name, sheet, row_number, column_name, value, reason from recsys.load_rejects"
        " order by row_number, column_name",
    )
    assert [(r["file_name"], r["sheet"], r["row_number"], r["column_name"], r["value"]) for r in rejects] == [
        ("users.csv", "users", 2, "first_name", "Ann\r\nBcc: all@example.com"),
        ("users.csv", "users", 3, "email", "bob@example.com\nBcc: x@example.com"),
        ("users.csv", "users", 3, "phone", "+1555\r0002"),
        ("users.csv", "users", 3, "push_token", "tok\n2"),
        ("users.csv", "users", 4, "first_name", "Cy\x0bde"),
    ]
    assert rejects[0]["reason"] == "line break or control character: first_name dropped, the user loaded"
    assert fetch_value(db, "select rows_rejected from recsys.load_log") == 0

    # a later row that drops a field replaces the stored value: an unsafe name is never kept
    again = _write(tmp_path / "users_2.csv", "user_id,email_opt_in,first_name", '4,false,"Dée\nX"')
    assert _load(db, settings, again).total("loaded") == 1
    assert fetch_all(db, "select email_opt_in, first_name from recsys.users where user_id = 4") == [
        {"email_opt_in": False, "first_name": None}
    ]
