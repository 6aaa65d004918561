"""Reading input files: header names to staging columns, the CSV byte stream for COPY (with its
`\\.` end-marker guard), and workbook sheets read with openpyxl.

Called by `recsys.data.extract.staging`, which streams what these read into the staging tables.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recsys.data.extract.sheets import SHEET_ORDER, SHEETS, SheetSpec
from recsys.errors import InputFileError

XLSX_MAX_ROWS = 1_048_575  # data rows below the header of one worksheet
# What reading a damaged workbook raises: a broken zip container or compressed member, missing
# parts, and malformed XML (ElementTree's ParseError and lxml's XMLSyntaxError are SyntaxErrors).
DAMAGED_WORKBOOK = (zipfile.BadZipFile, zlib.error, SyntaxError, KeyError, ValueError, OSError, EOFError)


def normalise_header(name: object) -> str:
    return re.sub(r"[\s\-]+", "_", str(name if name is not None else "").strip().lower())


def column_map(header: list[object], spec: SheetSpec, where: str) -> list[str]:
    """Staging column for each file column: `raw_<name>` for known ones, `extra_<i>` otherwise."""
    names = [normalise_header(h) for h in header]
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


class EndMarkerGuard(io.RawIOBase):
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


def cell_text(value: Any) -> str | None:
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


def workbook_sheets(path: Path) -> Iterator[tuple[str, Iterator[list[Any]], list[tuple[int, str, str]]]]:
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
                columns = column_map([c.value for c in header_cells], spec, where)
                positions = {c: i for i, c in enumerate(columns) if c.startswith("raw_")}
                formula_rejects: list[tuple[int, str, str]] = []
                staged = list(sheet_rows(rows, spec, positions, formula_rejects, where))
            except DAMAGED_WORKBOOK as e:
                raise InputFileError(
                    f"{where}: the workbook is damaged and cannot be read: {type(e).__name__}: {e}"
                ) from e
            yield name, iter(staged), formula_rejects
    finally:
        wb.close()


def sheet_rows(
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
        values = [cell_text(cells[i].value) if i is not None and i < len(cells) else None for i in order]
        if all(v is None or v == "" for v in values):
            continue  # blank rows (often trailing ones) are not data
        yield [row_number, *values]
