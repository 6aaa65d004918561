"""Which input files to load and when: folder discovery, the inbox's settle time and held files,
file signatures and checksums, and the moves to `loaded/` and `refused/`.

Called by `recsys.data.extract` (`extract_path`, `load_inbox`, `load_file`) and `recsys.data.feedback`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import shutil
import time
from pathlib import Path

from recsys.config.settings import Settings
from recsys.data.extract.sheets import SHEET_ORDER, classify

log = logging.getLogger(__name__)


# Names that upload tools and editors give a file while it is being written or edited: a partial
# download or upload (browsers, WinSCP, FileZilla, curl -o x.part), rsync's temporary copy
# (".name.XXXXXX"), and the lock files LibreOffice (".~lock.name#") and Excel ("~$name") keep next
# to an open file.
IN_PROGRESS_SUFFIXES = (
    ".part", ".partial", ".filepart", ".crdownload", ".download", ".tmp", ".temp", ".upload", ".uploading",
)  # fmt: skip


def held_by_name(folder: Path) -> dict[Path, str]:
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


def unsettled(path: Path, settings: Settings) -> str | None:
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


def feedback_files(folder: Path) -> list[Path]:
    """The `feedback*.csv` files of a folder, by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and classify(p) == "feedback")


def signature(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


# load_log.file_sha256 of a file that could not be read: not 64 hex digits, so it never equals a
# real checksum and never makes a later (readable) copy of the file look already loaded.
UNREADABLE_SHA256 = "unreadable: no checksum"


def size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def move_into(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        target = folder / f"{path.stem}.{stamp}{path.suffix}"
    shutil.move(str(path), target)
    return target
