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
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import sender_support

from recsys.config.settings import Settings
from recsys.data import extract
from recsys.data.extract import LoadResult, load_file, load_inbox
from recsys.db import Connection, fetch_all, fetch_value

REF = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
USER_HEADER = ("user_id", "email_opt_in", "sms_opt_in", "push_opt_in", "email", "phone", "push_token", "first_name")
EVENT_HEADER = "event_id,user_id,session_id,timestamp,action,product_category,channel,amount"


def _write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _write(path: Path, *lines: str) -> Path:
    return _write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


def _users_csv(path: Path, *rows: list[Any]) -> Path:
    """A users CSV of USER_HEADER and `rows`, written with the csv module (fields with line breaks quoted)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(USER_HEADER)
        w.writerows(rows)
    return path


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
        # the users of the first file come again unchanged: already present from the second on
        counts = (result.total("loaded") + result.total("duplicate"), result.total("rejected"))
        assert counts == (3, 2 if tail else 1), (eol, tail)
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
    path = _users_csv(
        tmp_path / "users.csv",
        [1, "true", "true", "false", "ann@example.com", "+15550001", "", "Ann\r\nBcc: all@example.com"],
        [2, "false", "true", "true", "bob@example.com\nBcc: x@example.com", "+1555\r0002", "tok\n2", "Bob"],
        [3, "true", "false", "false", "cy@example.com", "", "", "Cy\x0bde"],
        [4, "true", "false", "false", "dee@example.com", "", "", "Dée"],
    )
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


# --------------------------------------------------------------------------------------------
# Files that are mostly rejects


def _cli(settings: Settings, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return sender_support.run_cli(str(settings.database_url), tmp_path / "data", *args, **env)


def test_backfill_older_than_the_retention_window_is_refused_loudly(
    db: Connection, settings: Settings, tmp_path: Path
) -> None:
    old = REF - dt.timedelta(days=settings.event_retention_days + 30)
    rows = [f"b{i},{i},s{i},{(old + dt.timedelta(minutes=i)).isoformat()},purchase,,,9.99" for i in range(150)]
    path = _write(tmp_path / "events_backfill.csv", EVENT_HEADER, *rows)

    out = _cli(settings, tmp_path, "extract", "--source", str(path), "--reference-time", REF.isoformat())
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert out.stdout.strip().startswith("events_backfill.csv: refused, nothing loaded: all 150 rows rejected; ")
    assert "150 of them with timestamp: timestamp is older than the event retention window" in out.stdout
    assert "raise RECSYS_EVENT_RETENTION_DAYS to load this backfill" in out.stdout

    # the rejects say why, row by row; nothing was loaded; load_log says refused
    assert fetch_value(db, "select count(*) from recsys.behavior_events") == 0
    log = fetch_all(db, "select load_id, status, rows_read, rows_loaded, rows_rejected, message from recsys.load_log")
    assert [(r["status"], r["rows_read"], r["rows_loaded"], r["rows_rejected"]) for r in log] == [
        ("refused", 150, 0, 150)
    ]
    assert "raise RECSYS_EVENT_RETENTION_DAYS" in log[0]["message"]
    rejects = fetch_all(
        db, "select load_id, file_name, row_number, column_name from recsys.load_rejects order by row_number"
    )
    assert [(r["load_id"], r["file_name"], r["column_name"]) for r in rejects] == [
        (log[0]["load_id"], "events_backfill.csv", "timestamp")
    ] * 150
    assert [r["row_number"] for r in rejects] == list(range(2, 152))

    # the same file with the window raised is not blocked by the refused one's checksum
    db.commit()  # end the reads above: the load adds a partition to behavior_events
    wider = _cli(
        settings,
        tmp_path,
        "extract",
        "--source",
        str(path),
        "--reference-time",
        REF.isoformat(),
        RECSYS_EVENT_RETENTION_DAYS=str(settings.event_retention_days + 60),
    )
    assert wider.returncode == 0, wider.stderr
    assert fetch_value(db, "select count(*) from recsys.behavior_events") == 150


def test_reject_rate_above_the_setting_refuses_the_file(db: Connection, settings: Settings, tmp_path: Path) -> None:
    rows = [f"r{i},{'x' if i % 5 < 3 else i},s1,2026-03-01T10:00:00Z,view,,," for i in range(200)]
    path = _write(tmp_path / "events.csv", EVENT_HEADER, *rows)
    result = _load(db, settings, path)
    assert result.status == "refused"
    assert result.message == (
        "events.csv: 120 of 200 rows rejected, more than RECSYS_MAX_REJECT_RATE=0.5 allows; 120 of them with "
        "user_id: expected a whole number: ids must be whole numbers: check the column order and the export. "
        f"Every reject is in recsys.load_rejects (load {result.load_id})"
    )
    assert fetch_value(db, "select count(distinct row_number) from recsys.load_rejects") == 120
    assert fetch_value(db, "select count(*) from recsys.behavior_events") == 0

    # a share below the setting loads the valid rows, and so does a small file whatever its share
    loaded = _load(db, replace(settings, max_reject_rate=0.7), path)
    assert (loaded.status, loaded.total("loaded"), loaded.total("rejected")) == ("loaded", 80, 120)
    small = _write(tmp_path / "events_small.csv", EVENT_HEADER, *rows[:10])
    assert _load(db, settings, small).status == "loaded"


def test_dropped_fields_are_counted_and_never_named_as_why_a_file_was_refused(
    db: Connection, settings: Settings, tmp_path: Path
) -> None:
    # every row has a bad consent flag (a reject) and an email with a line break (only dropped)
    path = _users_csv(
        tmp_path / "users.csv",
        *([i, "maybe", "true", "false", f"u{i}@example.com\nBcc: x@example.com", "", "", "Ann"] for i in (1, 2)),
    )
    result = _load(db, settings, path)
    assert result.status == "refused"
    assert result.message.startswith("users.csv: all 2 rows rejected; 2 of them with email_opt_in: "), result.message
    assert "dropped" not in result.message

    # a loaded file's sheet_counts show the rows with a field dropped
    ok = _write(tmp_path / "users_ok.csv", "user_id,email_opt_in,first_name", '1,true,"Ann\nBcc: x"', "2,true,Bob")
    assert _load(db, settings, ok).status == "loaded"
    assert fetch_value(db, "select sheet_counts from recsys.load_log where file_name = 'users_ok.csv'") == {
        "users": {"read": 2, "loaded": 2, "rejected": 0, "duplicate": 0, "dropped": 1}
    }


def test_a_workbook_with_an_all_rejected_sheet_loads_nothing(
    db: Connection, settings: Settings, tmp_path: Path
) -> None:
    wb = openpyxl.Workbook()
    wb.active.title = "users"
    wb.active.append(["user_id", "email_opt_in"])
    wb.active.append([1, True])
    events = wb.create_sheet("events")
    events.append(["event_id", "user_id", "session_id", "timestamp", "action"])
    events.append(["e1", 1, "s1", "2026-03-01", "click"])
    events.append(["e2", 1, "s1", "2026-03-01", "click"])
    wb.save(tmp_path / "shop.xlsx")
    result = _load(db, settings, tmp_path / "shop.xlsx")
    assert result.status == "refused"
    assert result.message.startswith("shop.xlsx, sheet events: all 2 rows rejected; 2 of them with action: unknown")
    assert fetch_value(db, "select count(*) from recsys.users") == 0
    assert fetch_value(db, "select count(*) from recsys.load_rejects where sheet = 'events'") == 2
    assert fetch_value(db, "select sheet_counts from recsys.load_log") == {
        "users": {"read": 1, "loaded": 0, "rejected": 0, "duplicate": 0, "dropped": 0},
        "events": {"read": 2, "loaded": 0, "rejected": 2, "duplicate": 0, "dropped": 0},
    }


# --------------------------------------------------------------------------------------------
# Files still arriving


def _age(path: Path, seconds: float) -> None:
    """Set the file's modification time `seconds` in the past (time passing, without waiting)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_growing_file_is_left_for_a_later_run_then_loaded(db: Connection, settings: Settings, tmp_path: Path) -> None:
    from recsys.orchestration import pipeline

    settings = replace(settings, inbox_settle_seconds=600)
    night = REF.date()
    growing = _write(settings.inbox / "events_today.csv", EVENT_HEADER, "g1,1,s1,2026-03-01T10:00:00Z,view,,,")
    result = pipeline.extract(settings, night)
    assert result["files"] == [{"file": "events_today.csv", "status": "waiting"}]
    assert result["rows_loaded"] == 0 and result["refused"] == []
    (waiting,) = result["waiting"]
    assert waiting["file"] == "events_today.csv"
    assert "within RECSYS_INBOX_SETTLE_SECONDS=600: may still be arriving; left for a later run" in waiting["message"]
    assert growing.exists() and fetch_value(db, "select count(*) from recsys.load_log") == 0
    db.commit()

    # the upload goes on: still waiting
    with growing.open("a", encoding="utf-8") as f:
        f.write("g2,1,s1,2026-03-01T10:01:00Z,view,,,\n")
    assert pipeline.extract(settings, night)["files"] == [{"file": "events_today.csv", "status": "waiting"}]

    # written to the end and left alone longer than the settle time: the next run loads all of it
    with growing.open("a", encoding="utf-8") as f:
        f.write("g3,1,s1,2026-03-01T10:02:00Z,view,,,\n")
    _age(growing, 601)
    result = pipeline.extract(settings, night)
    assert result["files"] == [{"file": "events_today.csv", "status": "loaded"}] and result["waiting"] == []
    assert _event_ids(db) == ["g1", "g2", "g3"]
    assert not growing.exists() and (settings.inbox / "loaded" / "events_today.csv").exists()


def test_upload_and_editor_names_hold_a_file_back(db: Connection, settings: Settings, tmp_path: Path) -> None:
    inbox = settings.inbox
    row = "{},1,s1,2026-03-01T10:00:00Z,view,,,"
    _write(inbox / "events_a.csv.part", EVENT_HEADER, row.format("a"))  # curl, browsers, FileZilla
    _write(inbox / ".events_b.csv.Xk3f9Q", EVENT_HEADER, row.format("b"))  # rsync's temporary copy
    _write(inbox / "events_c.csv", EVENT_HEADER, row.format("c"))
    _write(inbox / ".~lock.events_c.csv#", ",user,host,01.06.2026 10:00,file:///home/user;")  # LibreOffice
    wb = openpyxl.Workbook()
    wb.active.title = "events"
    wb.active.append(["event_id", "user_id", "session_id", "timestamp", "action"])
    wb.active.append(["d", 1, "s1", "2026-03-01T10:00:00Z", "view"])
    wb.save(inbox / "shop_export.xlsx")
    _write_bytes(inbox / "~$op_export.xlsx", b"\x05owner")  # Excel's owner file of the open workbook
    _write(inbox / "events_e.csv", EVENT_HEADER, row.format("e"))
    for p in inbox.iterdir():
        _age(p, 3600)  # settled by time: only the names hold them back

    results = {r.path.name: (r.status, r.message) for r in load_inbox(db, settings, reference_at=REF)}
    assert {name: status for name, (status, _) in results.items()} == {
        "events_a.csv.part": "waiting",
        ".events_b.csv.Xk3f9Q": "waiting",
        "events_c.csv": "waiting",
        "shop_export.xlsx": "waiting",
        "events_e.csv": "loaded",
    }
    assert results["events_a.csv.part"][1] == "upload in progress (a temporary name): left for a later run"
    assert "open in an editor (lock file .~lock.events_c.csv#)" in results["events_c.csv"][1]
    assert "open in Excel (owner file ~$op_export.xlsx)" in results["shop_export.xlsx"][1]
    assert _event_ids(db) == ["e"]

    # the uploads finish (renamed into place), the editors close: everything loads
    (inbox / "events_a.csv.part").rename(inbox / "events_a.csv")
    (inbox / ".events_b.csv.Xk3f9Q").rename(inbox / "events_b.csv")
    (inbox / ".~lock.events_c.csv#").unlink()
    (inbox / "~$op_export.xlsx").unlink()
    assert {r.status for r in load_inbox(db, settings, reference_at=REF)} == {"loaded"}
    assert _event_ids(db) == ["a", "b", "c", "d", "e"]


def test_a_file_that_changes_while_it_is_read_is_not_committed(
    db: Connection, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(settings.inbox / "events.csv", EVENT_HEADER, "c1,1,s1,2026-03-01T10:00:00Z,view,,,")
    _age(path, 3600)
    validate = extract._validate

    def writer_still_appending(*args: Any, **kwargs: Any) -> Any:
        with path.open("a", encoding="utf-8") as f:  # the upload goes on while the file is read
            f.write("c2,1,s1,2026-03-01T10:01:00Z,view,,,\n")
        return validate(*args, **kwargs)

    monkeypatch.setattr(extract, "_validate", writer_still_appending)
    (result,) = load_inbox(db, settings, reference_at=REF)
    assert (result.status, result.message) == (
        "waiting",
        "the file changed while it was read (still being written?): left for a later run",
    )
    assert path.exists() and _event_ids(db) == [] and _log(db) == []
    monkeypatch.setattr(extract, "_validate", validate)
    _age(path, 3600)
    assert [r.status for r in load_inbox(db, settings, reference_at=REF)] == ["loaded"]
    assert _event_ids(db) == ["c1", "c2"]
