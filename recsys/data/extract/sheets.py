"""What the extract stage loads: the sheets and their columns, file kinds, and per-file results.

`SHEETS` names each sheet's columns and required ones; `classify` tells a file's kind from its
name; `LoadResult` and `SheetCounts` are what a load reports. Used by every module of
`recsys.data.extract` and by `recsys.data.feedback`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from psycopg2 import sql

from recsys.config.settings import Settings
from recsys.db.sqlfiles import load_sql


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


def _checked(*columns: str) -> tuple[tuple[str, str, str], ...]:
    return tuple((c, c, f"{c}_reason") for c in columns)


@dataclass(frozen=True)
class SheetRejects:
    """What sql/extract/rejects.sql records of a sheet, with the names of its <sheet>_check.sql."""

    problems: tuple[tuple[str, str, str], ...]
    """Per problem, in the order recorded: the column the reject names, the checked column holding
    its value, the one holding its reason (null: no problem)."""
    rows: tuple[str, ...] = ("is_rejected",)
    """The flags of the rows whose problems are recorded (any of them)."""


REJECTS: dict[str, SheetRejects] = {
    "events": SheetRejects(
        (
            *_checked("event_id", "user_id", "session_id"),
            ("timestamp", "event_ts", "timestamp_reason"),
            *_checked("action", "amount", "discount_used", "free_shipping_used"),
        )
    ),
    "users": SheetRejects(
        (
            *_checked("user_id", "email_opt_in", "sms_opt_in", "push_opt_in", "email", "timezone", "updated_at"),
            # fields dropped from a loaded row (a line break): recorded, the row kept
            *((c, c, f"{c}_dropped") for c in ("email", "phone", "push_token", "first_name")),
        ),
        rows=("is_rejected", "has_dropped_fields"),
    ),
    # every column of these two sheets is checked
    "offers": SheetRejects(_checked(*SHEETS["offers"].columns)),
    "feedback": SheetRejects(_checked(*SHEETS["feedback"].columns)),
}

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
        return asdict(self)


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


def classify(path: Path) -> str | None:
    """`workbook`, a CSV kind (`events`, `users`, `offers`, `feedback`), or None."""
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        return "workbook"
    if suffix == ".csv":
        name = path.name.lower()
        return next((k for k in CSV_KINDS if name.startswith(k)), None)
    return None


def sql_text(settings: Settings, name: str) -> str:
    return load_sql(settings, f"extract/{name}")


def rejects_sql(settings: Settings, sheet: str) -> sql.Composed:
    """sql/extract/rejects.sql for one sheet (params: load_id, file_name, sheet)."""
    spec = REJECTS[sheet]
    problems = sql.SQL("values {}").format(
        sql.SQL(", ").join(
            sql.SQL("({}, {}, {})").format(sql.Literal(column), sql.Identifier("c", value), sql.Identifier("c", reason))
            for column, value, reason in spec.problems
        )
    )
    return sql.SQL(sql_text(settings, "rejects")).format(
        checked=sql.Identifier(f"{sheet}_checked"),
        problems=problems,
        reported=sql.SQL(" or ").join(sql.Identifier("c", flag) for flag in spec.rows),
    )
