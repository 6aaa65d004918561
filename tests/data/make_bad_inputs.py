"""Write the corpus of bad input files in `tests/data/bad/` (used by `tests/test_extract.py`).

Run it after changing a file's recipe below: `.venv/bin/python tests/data/make_bad_inputs.py`.
The output is committed, so a person can open each file; the same recipes always give the same
bytes (fixed zip and document times), so a re-run shows up in `git diff` only when a recipe
changed. Each file tests one kind of bad input (README.md in the folder lists them); what the
loader must make of each is written down in `tests/test_extract.py`, next to its name.

Every timestamp is in March 2026, except where the file tests future times: the tests load with
the reference time 2026-06-01T00:00:00Z.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import openpyxl
from openpyxl.writer.excel import ExcelWriter

BAD = Path(__file__).resolve().parent / "bad"
STAMP = dt.datetime(2026, 3, 1)  # the workbooks' created and modified time
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

EVENTS_HEADER = (
    "event_id,user_id,session_id,timestamp,action,product_category,channel,amount,discount_used,free_shipping_used"
)
USERS_HEADER = "user_id,email_opt_in,sms_opt_in,push_opt_in,email,phone,push_token,timezone,first_name,updated_at"
OFFERS_HEADER = (
    "offer_id,user_id,sent_at,offer_type,offer_value,channel,timing,propensity,opened,clicked,converted,revenue"
)
GOOD_EVENTS = [
    "g1,1,s1,2026-03-01T10:00:00Z,view,books,web,,,",
    "g2,1,s1,2026-03-01T10:05:00Z,purchase,books,web,12.50,false,true",
]


def _csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8")


# --------------------------------------------------------------------------------------------
# Workbooks


class _FixedTimeZip(zipfile.ZipFile):
    """A ZipFile that stamps every member with the same date, so equal content gives equal bytes."""

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        return info

    def writestr(self, zinfo_or_arcname, data, compress_type=None, compresslevel=None):  # type: ignore[override]
        if not isinstance(zinfo_or_arcname, zipfile.ZipInfo):
            zinfo_or_arcname = self._info(str(zinfo_or_arcname))
        super().writestr(zinfo_or_arcname, data, compress_type, compresslevel)

    def write(self, filename, arcname=None, compress_type=None, compresslevel=None):  # type: ignore[override]
        info = self._info(str(arcname or os.path.basename(filename)))
        with open(filename, "rb") as src, self.open(info, "w") as dst:
            shutil.copyfileobj(src, dst)


def _workbook(sheets: dict[str, list[list[object]]]) -> bytes:
    """An .xlsx with one sheet per entry; an empty list in the rows leaves that row blank."""
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    wb.properties.created = wb.properties.modified = STAMP
    wb.properties.creator = "tests/data/make_bad_inputs.py"
    out = io.BytesIO()
    ExcelWriter(wb, _FixedTimeZip(out, "w", zipfile.ZIP_DEFLATED)).save()
    return out.getvalue()


def _good_workbook() -> bytes:
    header = EVENTS_HEADER.split(",")
    rows = [[*line.split(",")] for line in GOOD_EVENTS]
    return _workbook({"events": [header, *[[v or None for v in r] for r in rows]]})


def _rewrite_member(data: bytes, member: str, change: Callable[[bytes], bytes]) -> bytes:
    """The workbook with one zip member's content replaced (the zip itself stays valid)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with _FixedTimeZip(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            content = src.read(name)
            dst.writestr(name, change(content) if name == member else content)
    return out.getvalue()


def _damage_member(data: bytes, member: str) -> bytes:
    """The workbook with bytes in the middle of one member's compressed data overwritten, as a bad
    disk or an interrupted copy leaves it: the zip directory is intact, the member is not."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(member)
    local = data[info.header_offset : info.header_offset + 30]
    name_len = int.from_bytes(local[26:28], "little")
    extra_len = int.from_bytes(local[28:30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    middle = start + info.compress_size // 2
    return data[:middle] + b"\xff" * 8 + data[middle + 8 :]


def formula_workbook() -> bytes:
    return _workbook(
        {
            "events": [
                ["event_id", "user_id", "session_id", "timestamp", "action", "amount", "note"],
                ["f1", 1, "s1", "2026-03-01T10:00:00Z", "purchase", "=10*2", None],
                ["f2", "=1+1", "s1", "2026-03-01T10:01:00Z", "view", None, None],
                ["f3", 1, "s1", "2026-03-01T10:02:00Z", "view", None, "=A1"],
                ["f4", 1, "s1", dt.datetime(2026, 3, 1, 10, 3), "purchase", 15.5, None],
                ["f5", "=2", "s1", "2026-03-01T10:04:00Z", "purchase", "=3", None],
            ]
        }
    )


def bad_rows_workbook() -> bytes:
    return _workbook(
        {
            "Users": [
                ["User_ID", "Email Opt-In", "SMS_OPT_IN", "timezone", "Updated_At", "Loyalty Tier"],
                [1, True, False, "Europe/Paris", dt.datetime(2026, 2, 1, 8, 30), "gold"],
                ["two", True, True, "UTC", None, "silver"],
            ],
            "Offers": [
                ["offer_id", "user_id", "sent_at", "offer_type", "offer_value", "channel", "timing", "propensity"],
                ["o1", 1, dt.datetime(2026, 3, 1, 9, 0), "discount", 10, "email", "immediate", 0.5],
                ["o2", 1, dt.datetime(2026, 3, 1, 9, 0), "coupon", 10, "email", "immediate", 0.5],
            ],
            "EVENTS": [
                ["Event_ID", "User ID", "Session-Id", "TIMESTAMP", "Action", "Amount", "Comment"],
                ["x1", 1, "s1", dt.datetime(2026, 3, 1, 10, 0), "view", None, "fine"],
                ["x2", "abc", "s1", dt.datetime(2026, 3, 1, 10, 1), "view", None, None],
                [],
                ["x3", 1, "s1", dt.datetime(2026, 3, 1, 10, 2), "purchase", -2.5, None],
                ["x4", 2, "s2", "2026-03-01T12:00:00+01:00", "purchase", 19.99, None],
                ["x5", 2, "s2", dt.datetime(2026, 7, 1), "view", None, None],
                ["x6", 2.0, "s2", dt.datetime(2026, 3, 2), "purchase", "12,5", None],
                [],
                [],
            ],
        }
    )


# --------------------------------------------------------------------------------------------
# The corpus: file name -> (what it checks, its bytes)

CORPUS: dict[str, tuple[str, Callable[[], bytes]]] = {
    # --- files refused as a whole
    "events.txt": (
        "wrong extension: CSV text in a .txt file",
        lambda: _csv(EVENTS_HEADER, *GOOD_EVENTS),
    ),
    "events.xls": (
        "wrong extension: a legacy Excel 97 workbook (only the OLE signature)",
        lambda: bytes.fromhex("d0cf11e0a1b11ae1") + bytes(504),
    ),
    "notes.csv": (
        "a CSV file whose name does not say what it holds",
        lambda: _csv(EVENTS_HEADER, *GOOD_EVENTS),
    ),
    "feedback.csv": (
        "a feedback file given to extract (it belongs to ingest-feedback)",
        lambda: _csv("offer_id,event,event_at,revenue", "1,opened,2026-03-01T10:00:00Z,"),
    ),
    "corrupt.xlsx": (
        "corrupt workbook: the zip directory is intact, the events sheet's compressed data is not",
        lambda: _damage_member(_good_workbook(), "xl/worksheets/sheet1.xml"),
    ),
    "corrupt_xml.xlsx": (
        "corrupt workbook: a valid zip whose events sheet XML is cut off",
        lambda: _rewrite_member(_good_workbook(), "xl/worksheets/sheet1.xml", lambda x: x[: len(x) // 2]),
    ),
    "truncated.xlsx": (
        "truncated workbook: the first half of a valid file",
        lambda: (lambda b: b[: len(b) // 2])(_good_workbook()),
    ),
    "not_a_workbook.xlsx": (
        "CSV text saved under an .xlsx name",
        lambda: _csv(EVENTS_HEADER, *GOOD_EVENTS),
    ),
    "missing_sheet.xlsx": (
        "a workbook without an events sheet (its valid users sheet must not load either)",
        lambda: _workbook(
            {
                "users": [["user_id", "email_opt_in"], [1, True]],
                "Sheet1": [["event_id", "user_id"], ["g1", 1]],
            }
        ),
    ),
    "missing_column.xlsx": (
        "events sheet without the required action column; the valid users sheet before it must not load",
        lambda: _workbook(
            {
                "users": [["user_id", "email_opt_in"], [1, True]],
                "events": [
                    ["event_id", "user_id", "session_id", "timestamp"],
                    ["g1", 1, "s1", "2026-03-01T10:00:00Z"],
                ],
            }
        ),
    ),
    "empty_sheet.xlsx": (
        "a workbook whose events sheet has no cells at all",
        lambda: _workbook({"events": []}),
    ),
    "events_missing_column.csv": (
        "events CSV without the required session_id column",
        lambda: _csv("event_id,user_id,timestamp,action", "g1,1,2026-03-01T10:00:00Z,view"),
    ),
    "events_empty.csv": ("an empty file (0 bytes)", lambda: b""),
    "events_semicolon.csv": (
        "semicolon-separated CSV (as Excel writes it in some locales)",
        lambda: _csv(EVENTS_HEADER.replace(",", ";"), *(line.replace(",", ";") for line in GOOD_EVENTS)),
    ),
    "events_duplicate_header.csv": (
        "a header naming user_id twice (matched case-insensitively)",
        lambda: _csv("user_id,session_id,timestamp,action,User_ID", "1,s1,2026-03-01T10:00:00Z,view,2"),
    ),
    "events_ragged.csv": (
        "a data row with one field too few",
        lambda: _csv(EVENTS_HEADER, GOOD_EVENTS[0], "g3,1,s1,2026-03-01T10:06:00Z,view,books,web,,"),
    ),
    "events_unterminated_quote.csv": (
        "a quoted field that never ends",
        lambda: _csv(EVENTS_HEADER, GOOD_EVENTS[0], 'g3,1,s1,2026-03-01T10:06:00Z,view,"books,web,,,', *GOOD_EVENTS),
    ),
    "events_latin1.csv": (
        "non-UTF-8 CSV: Latin-1 text in a data row",
        lambda: (EVENTS_HEADER + "\n" + GOOD_EVENTS[0] + "\ng3,1,s1,2026-03-01T10:06:00Z,view,décor,web,,,\n").encode(
            "latin-1"
        ),
    ),
    "events_utf16.csv": (
        "non-UTF-8 CSV: UTF-16 with a byte order mark (Excel's 'Unicode Text')",
        lambda: (EVENTS_HEADER + "\n" + GOOD_EVENTS[0] + "\n").encode("utf-16"),
    ),
    "events_nul_in_header.csv": (
        "a NUL byte inside a header name",
        lambda: _csv(EVENTS_HEADER.replace("action", "action\x00"), *GOOD_EVENTS),
    ),
    # --- files loaded with exact rejects
    "events_text_in_numbers.csv": (
        "text in numeric and boolean columns (user_id, amount, discount_used)",
        lambda: _csv(
            EVENTS_HEADER,
            "t1,1,s1,2026-03-01T10:00:00Z,view,books,web,,,",
            "t2,abc,s1,2026-03-01T10:01:00Z,view,books,web,,,",
            "t3,1.5,s1,2026-03-01T10:02:00Z,view,books,web,,,",
            "t4,2,s2,2026-03-01T10:03:00Z,purchase,books,web,ten,true,false",
            't5,2,s2,2026-03-01T10:04:00Z,purchase,books,web,"12,50",true,false',
            "t6,2,s2,2026-03-01T10:05:00Z,purchase,books,web,12.50,maybe,false",
            "t7,3,s3,2026-03-01T10:06:00Z,purchase,books,email,19.99,yes,0",
            "t8,4.0,s4,2026-03-01T10:07:00Z,view,books,web,,,",
            "t9,x,s5,2026-03-01T10:08:00Z,purchase,books,web,abc,no,no",
        ),
    ),
    "events_unknown_action.csv": (
        "unknown and missing actions (case and spaces around known ones are fine)",
        lambda: _csv(
            EVENTS_HEADER,
            "a1,1,s1,2026-03-01T10:00:00Z,view,,,,,",
            "a2,1,s1,2026-03-01T10:01:00Z,click,,,,,",
            "a3,1,s1,2026-03-01T10:02:00Z,VIEW,,,,,",
            "a4,1,s1,2026-03-01T10:03:00Z, Add_To_Cart ,,,,,",
            "a5,1,s1,2026-03-01T10:04:00Z,,,,,,",
            "a6,1,s1,2026-03-01T10:05:00Z,refund,,,5.00,,",
        ),
    ),
    "events_negative_amount.csv": (
        "negative amounts, and amounts too large for the table once rounded to cents",
        lambda: _csv(
            EVENTS_HEADER,
            "n1,1,s1,2026-03-01T10:00:00Z,purchase,,,-5.00,,",
            "n2,1,s1,2026-03-01T10:01:00Z,purchase,,,0,,",
            "n3,1,s1,2026-03-01T10:02:00Z,purchase,,,-0.01,,",
            "n4,1,s1,2026-03-01T10:03:00Z,view,,,-1,,",
            "n5,1,s1,2026-03-01T10:04:00Z,purchase,,,999999999999.999,,",
            "n6,1,s1,2026-03-01T10:05:00Z,purchase,,,1e12,,",
            "n7,1,s1,2026-03-01T10:06:00Z,purchase,,,999999999999.99,,",
            "n8,1,s1,2026-03-01T10:07:00Z,purchase,,,10.005,,",
        ),
    ),
    "events_purchase_without_amount.csv": (
        "purchases without an amount (empty or blank); other actions need none",
        lambda: _csv(
            EVENTS_HEADER,
            "p1,1,s1,2026-03-01T10:00:00Z,purchase,,,,,",
            'p2,1,s1,2026-03-01T10:01:00Z,purchase,,,"  ",,',
            "p3,1,s1,2026-03-01T10:02:00Z,view,,,,,",
            "p4,1,s1,2026-03-01T10:03:00Z,add_to_cart,,,12.00,,",
            "p5,1,s1,2026-03-01T10:04:00Z,purchase,,,25.00,,",
        ),
    ),
    "events_bad_timestamps.csv": (
        "unparseable, impossible (30 February), missing and future timestamps; one exactly at the reference time",
        lambda: _csv(
            EVENTS_HEADER,
            "b1,1,s1,2026-03-01T10:00:00Z,view,,,,,",
            "b2,1,s1,yesterday,view,,,,,",
            "b3,1,s1,01/03/2026 10:00,view,,,,,",
            "b4,1,s1,2026-13-01T00:00:00Z,view,,,,,",
            "b5,1,s1,2026-02-30T10:00:00Z,view,,,,,",
            "b6,1,s1,2026-06-01T00:00:01Z,view,,,,,",
            "b7,1,s1,2026-06-01T00:00:00Z,view,,,,,",
            "b8,1,s1,2026-06-01T02:00:00+02:00,view,,,,,",
            "b9,1,s1,2026-05-31T23:30:00-01:00,view,,,,,",
            "b10,1,s1,,view,,,,,",
            "b11,1,s1,2027-01-01,view,,,,,",
            "b12,1,s1,2026-03-01 10:00:00,view,,,,,",
            "b13,1,s1,46082.5,view,,,,,",
        ),
    ),
    "events_duplicate_rows.csv": (
        "repeated rows: with the same event_id (kept once) and without one (kept as two events)",
        lambda: _csv(
            EVENTS_HEADER,
            "d1,1,s1,2026-03-01T10:00:00Z,view,books,web,,,",
            "d1,1,s1,2026-03-01T10:00:00Z,view,books,web,,,",
            "d2,1,s1,2026-03-01T10:01:00Z,view,books,web,,,",
            "d2,1,s1,2026-03-01T10:01:00Z,view,toys,web,,,",
            ",2,s2,2026-03-01T11:00:00Z,view,toys,app,,,",
            ",2,s2,2026-03-01T11:00:00Z,view,toys,app,,,",
            ",2,s2,2026-03-01T11:05:00Z,purchase,toys,app,9.90,false,true",
        ),
    ),
    "events_cr_line_endings.csv": (
        "lines ending in a bare carriage return (old Mac CSV); loads normally",
        lambda: (EVENTS_HEADER + "\r" + "\r".join(GOOD_EVENTS) + "\r").encode("utf-8"),
    ),
    "formula.xlsx": (
        "formula cells in data columns (rejected) and in an ignored extra column (fine)",
        formula_workbook,
    ),
    "bad_rows.xlsx": (
        "a workbook with bad rows in all three sheets, blank rows, mixed-case sheet and column names",
        bad_rows_workbook,
    ),
    "users_bad.csv": (
        "users: unknown time zone, bad booleans, bad email, bad user_id, bad and future updated_at",
        lambda: _csv(
            USERS_HEADER,
            "1,true,false,,ann@example.com,+15550001,,Europe/Berlin,Ann,2026-01-01T00:00:00Z",
            "2,yes,no,1,bob@example.com,,tok2,,Bob,",
            "3,true,,,cy@example.com,,,Mars/Olympus_Mons,Cy,",
            "4,maybe,,,di@example.com,,,UTC,Di,",
            "5,true,,,not-an-email,,,UTC,Ed,",
            "x6,true,,,,,,UTC,Fay,",
            ",true,,,,,,UTC,Gus,",
            "8,true,,,,,,UTC,Hal,2026-07-01T00:00:00Z",
            "9,true,,,,,,Berlin,Ivy,13/01/2026",
        ),
    ),
    "offers_bad.csv": (
        "past offers: unknown offer_type, channel and timing, propensity outside (0, 1], bad values",
        lambda: _csv(
            OFFERS_HEADER,
            "o1,1,2026-03-01T09:00:00Z,discount,10,email,immediate,0.25,true,true,false,0",
            "o2,1,2026-03-01T09:00:00Z,coupon,10,email,immediate,0.25,,,,",
            "o3,1,2026-03-01T09:00:00Z,discount,10,web,immediate,0.25,,,,",
            "o4,1,2026-03-01T09:00:00Z,discount,10,email,tomorrow,0.25,,,,",
            "o5,1,2026-03-01T09:00:00Z,discount,10,email,immediate,0,,,,",
            "o6,1,2026-03-01T09:00:00Z,discount,10,email,immediate,1.5,,,,",
            "o7,1,2026-03-01T09:00:00Z,discount,10,email,immediate,high,,,,",
            "o8,2,2026-03-01T09:00:00Z,Free_Shipping,5,SMS,Delay_1hour,1,false,,,",
            "o9,2,2026-03-01T09:00:00Z,bundle,0.001,push,delay_6hours,,,,,",
            "o10,2,2026-03-01T09:00:00Z,recommendation,1,push,delay_6hours,,,,,-3",
            ",2,2026-03-01T09:00:00Z,discount,10,email,immediate,,,,,",
            "o12,2,2026-07-01T09:00:00Z,discount,10,email,immediate,,,,,",
            "o13,2,2026-03-01T09:00:00Z,discount,10,email,immediate,0.5,sometimes,,,",
            "o14,3,2026-03-01T09:00:00Z,recommendation,1,push,delay_6hours,,,,,12.345",
        ),
    ),
}


def readme() -> str:
    lines = [
        "# Bad input files",
        "",
        "Written by `tests/data/make_bad_inputs.py` (edit the recipes there, then run it); what the loader",
        "must make of each file is asserted in `tests/test_extract.py`. Tests load them with the reference",
        "time 2026-06-01T00:00:00Z.",
        "",
        "| file | checks |",
        "| --- | --- |",
    ]
    lines += [f"| `{name}` | {what} |" for name, (what, _) in CORPUS.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    BAD.mkdir(parents=True, exist_ok=True)
    for name, (_, build) in CORPUS.items():
        (BAD / name).write_bytes(build())
    (BAD / "README.md").write_text(readme(), encoding="utf-8")
    print(f"wrote {len(CORPUS)} files to {BAD.name}/")


if __name__ == "__main__":
    main()
