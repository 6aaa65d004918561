"""Fast, deterministic writers for the generator's tables: CSV built as byte matrices, and .xlsx.

CSV rows are assembled without a Python loop per row: every field becomes a (rows, width) uint8
matrix of its characters, padded with NUL bytes; the fields are laid side by side with commas and a
newline, and dropping the NUL bytes leaves the finished text. The workbook writer uses openpyxl's
write-only mode and fixes every timestamp inside the zip and the document properties, so the same
tables always give the same bytes. Called by `recsys.benchmark.synth.writers` and, for its event files,
`recsys.benchmark.simulate`.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
CHUNK_ROWS = 400_000
_POW10 = 10 ** np.arange(19, dtype=np.int64)


def _bytes_matrix(strings: Sequence[str] | np.ndarray) -> np.ndarray:
    """Fixed-width NUL-padded byte matrix of a few strings (a lookup table)."""
    arr = np.array([s.encode() if isinstance(s, str) else bytes(s) for s in strings], dtype=bytes)
    width = max(arr.dtype.itemsize, 1)
    return np.frombuffer(arr.astype(f"S{width}").tobytes(), dtype=np.uint8).reshape(len(arr), width)


def lookup(table: Sequence[str], codes: np.ndarray) -> np.ndarray:
    """Text of `table[code]` per row; a negative code is an empty field."""
    tab = _bytes_matrix([*table, ""])
    codes = np.asarray(codes, dtype=np.int64)
    return tab[np.where(codes < 0, len(table), codes)]


def digits(x: np.ndarray) -> np.ndarray:
    """Decimal text of non-negative integers (right aligned; the NUL padding vanishes on writing)."""
    x = np.asarray(x, dtype=np.int64)
    if len(x) == 0:
        return np.zeros((0, 1), dtype=np.uint8)
    top = int(x.max())
    width = 1
    while width < 19 and top >= _POW10[width]:
        width += 1
    out = np.empty((len(x), width), dtype=np.uint8)
    q = x.copy()
    for j in range(width - 1, -1, -1):
        d = (q % 10).astype(np.uint8) + 48
        out[:, j] = d if j == width - 1 else np.where(x >= _POW10[width - 1 - j], d, 0)
        q //= 10
    return out


def zero_padded(x: np.ndarray, width: int) -> np.ndarray:
    """Decimal text of non-negative integers below 10**width, zero padded to `width` characters."""
    x = np.asarray(x, dtype=np.int64)
    out = np.empty((len(x), width), dtype=np.uint8)
    for j in range(width):
        out[:, j] = 48 + (x // _POW10[width - 1 - j]) % 10
    return out


def hex16(x: np.ndarray) -> np.ndarray:
    """16 lowercase hex digits of unsigned 64-bit integers."""
    x = np.asarray(x, dtype=np.uint64)
    alphabet = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    out = np.empty((len(x), 16), dtype=np.uint8)
    for j in range(16):
        out[:, j] = alphabet[((x >> np.uint64(4 * (15 - j))) & np.uint64(15)).astype(np.int64)]
    return out


def const(text: str, n: int) -> np.ndarray:
    return np.tile(np.frombuffer(text.encode(), dtype=np.uint8), (n, 1))


def join(parts: Iterable[np.ndarray], missing: np.ndarray | None = None) -> np.ndarray:
    """One field made of several parts side by side; rows where `missing` is set become empty."""
    out = np.concatenate(list(parts), axis=1)
    if missing is not None:
        out[np.asarray(missing, dtype=bool)] = 0
    return out


def prefixed(prefix: str, x: np.ndarray) -> np.ndarray:
    return join([const(prefix, len(x)), digits(x)])


def money(cents: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
    """Amounts with two decimals from integer cents."""
    cents = np.asarray(cents, dtype=np.int64)
    safe = np.where(cents < 0, 0, cents)
    return join([digits(safe // 100), const(".", len(cents)), zero_padded(safe % 100, 2)], missing)


def booleans(values: np.ndarray) -> np.ndarray:
    """`true` / `false`, or empty where the value is negative (int8 with -1 for missing)."""
    v = np.asarray(values, dtype=np.int64)
    return lookup(("false", "true"), np.where(v < 0, -1, v))


_TIME_OF_DAY: np.ndarray | None = None


def _time_of_day() -> np.ndarray:
    """'HH:MM:SSZ' for every second of a day."""
    global _TIME_OF_DAY
    if _TIME_OF_DAY is None:
        s = np.arange(86_400)
        colon = const(":", len(s))
        _TIME_OF_DAY = join(
            [
                zero_padded(s // 3600, 2),
                colon,
                zero_padded(s // 60 % 60, 2),
                colon,
                zero_padded(s % 60, 2),
                const("Z", len(s)),
            ]
        )
    return _TIME_OF_DAY


def timestamps(seconds: np.ndarray) -> np.ndarray:
    """ISO 8601 UTC text like 2026-09-01T13:45:12Z of epoch seconds."""
    sec = np.asarray(seconds, dtype=np.int64)
    if len(sec) == 0:
        return np.zeros((0, 20), dtype=np.uint8)
    day = sec // 86_400
    first = int(day.min())
    span = int(day.max()) - first + 1
    dates = np.datetime_as_string(np.arange(first, first + span).astype("datetime64[D]"))
    table = _bytes_matrix([f"{d}T" for d in dates])
    return join([table[day - first], _time_of_day()[sec % 86_400]])


def floats(values: np.ndarray) -> np.ndarray:
    """Shortest round-trip text of floats that take few distinct values (e.g. propensities)."""
    uniq, inverse = np.unique(np.asarray(values, dtype=np.float64), return_inverse=True)
    return lookup([repr(float(u)) for u in uniq], inverse)


def write_csv(path: Path, header: Sequence[str], n_rows: int, fields: Callable[[int, int], list[np.ndarray]]) -> None:
    """Write a CSV file whose rows lo..hi are given as field matrices by `fields(lo, hi)`."""
    with open(path, "wb") as f:
        f.write((",".join(header) + "\n").encode())
        for lo in range(0, n_rows, CHUNK_ROWS):
            hi = min(lo + CHUNK_ROWS, n_rows)
            cols = fields(lo, hi)
            comma = const(",", hi - lo)
            parts: list[np.ndarray] = []
            for i, col in enumerate(cols):
                if i:
                    parts.append(comma)
                parts.append(col)
            parts.append(const("\n", hi - lo))
            block = np.concatenate(parts, axis=1)
            f.write(block[block != 0].tobytes())


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
        with open(filename, "rb") as src, self.open(info, "w", force_zip64=True) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def write_xlsx(
    path: Path, sheets: list[tuple[str, Sequence[str], int, Callable[[int, int], list[list]]]], stamp: dt.datetime
) -> None:
    """Write a workbook with one sheet per (name, header, n_rows, columns(lo, hi)) in write-only mode.

    `columns(lo, hi)` returns the rows lo..hi as a list of Python lists, one per column. `stamp`
    (naive UTC) is the document's created and modified time.
    """
    from openpyxl import Workbook
    from openpyxl.writer.excel import ExcelWriter

    wb = Workbook(write_only=True)
    wb.properties.created = stamp
    wb.properties.modified = stamp
    wb.properties.creator = "recsys generate-data"
    for name, header, n_rows, columns in sheets:
        ws = wb.create_sheet(name)
        ws.append(list(header))
        for lo in range(0, n_rows, CHUNK_ROWS // 4):
            hi = min(lo + CHUNK_ROWS // 4, n_rows)
            for row in zip(*columns(lo, hi), strict=True):
                ws.append(row)
    archive = _FixedTimeZip(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
    ExcelWriter(wb, archive).save()
