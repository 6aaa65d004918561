"""What every task function of the pipeline shares: its settings inside Airflow, the night's dates,
the DAG params' checks, plain JSON results, and the step decorator with its listeners.

Nothing here imports Airflow at import time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from functools import wraps
from pathlib import Path
from typing import Any

from recsys.config.settings import Settings, load_settings
from recsys.db.sqlfiles import load_sql
from recsys.errors import RecsysError

log = logging.getLogger("recsys.orchestration.pipeline")

CONNECTION_ID = "recsys_db"


def airflow_settings(conn_id: str = CONNECTION_ID) -> Settings:
    """Settings for a task running inside Airflow: the `recsys_db` connection when it exists.

    Falls back to `RECSYS_DATABASE_URL`, then to the embedded server (`recsys.db.database_url`).
    Called at task run time only, never while a DAG file is parsed.
    """
    settings = load_settings()
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        where = "RECSYS_DATABASE_URL" if settings.database_url else "the embedded PostgreSQL"
        log.info("no Airflow connection %r: using %s", conn_id, where)
        return settings
    from recsys.db import connection_url

    return replace(settings, database_url=connection_url(conn))


def campaign_date_for(
    logical_date: dt.datetime | None, run_after: dt.datetime | None, override: str | dt.date | None = None
) -> dt.date:
    """The run's campaign date (contract section 0): the param, else the logical date in UTC.

    Runs triggered without a logical date (possible from the UI and the API in Airflow 3) use
    the moment they were queued to run (`run_after`).
    """
    if override:
        if isinstance(override, dt.date):
            return override
        try:
            return dt.date.fromisoformat(str(override).strip())
        except ValueError as e:
            raise RecsysError(f"param campaign_date: expected a date as YYYY-MM-DD, got {override!r}") from e
    moment = logical_date or run_after
    if moment is None:
        raise RecsysError("the run has neither a logical date nor a run_after time: pass campaign_date")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).date()


def reference_time(campaign_date: dt.date) -> dt.datetime:
    """The load's reference time for a night: the campaign date, 00:00 UTC (contract section 0)."""
    return dt.datetime.combine(campaign_date, dt.time(0), tzinfo=dt.UTC)


def url(settings: Settings) -> str:
    from recsys.db import database_url

    return database_url(settings)


def jsonable(value: Any) -> Any:
    """Round-trip through JSON so XComs and the report hold plain values (dates as ISO text)."""

    def default(o: Any) -> Any:
        if isinstance(o, dt.date | dt.datetime):
            return o.isoformat()
        if isinstance(o, Path):
            return str(o)
        if hasattr(o, "item"):  # numpy scalars
            return o.item()
        if hasattr(o, "tolist"):
            return o.tolist()
        raise TypeError(f"not JSON-serialisable: {type(o).__name__}")

    return json.loads(json.dumps(value, default=default, allow_nan=False))


def seconds(started: float) -> float:
    return round(time.perf_counter() - started, 3)


Listener = Callable[[str, str, dict[str, Any] | None], None]
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> Callable[[], None]:
    """Call `listener(task, "start" | "done", result)` around every task function (the demo's
    progress display). Returns a function that removes it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def step(name: str) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Announce a task function to the listeners, and log how long it took."""

    def decorate(func: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
            for listener in list(_listeners):
                listener(name, "start", None)
            started = time.perf_counter()
            result = func(*args, **kwargs)
            log.info("%s: done in %.1f s", name, time.perf_counter() - started)
            for listener in list(_listeners):
                listener(name, "done", result)
            return result

        return wrapper

    return decorate


def whole(value: Any, param: str, *, minimum: int, maximum: int | None = None) -> int:
    """A DAG param that must be a whole number in [minimum, maximum]; a clear error otherwise."""
    try:
        n = int(value)
    except (TypeError, ValueError) as e:
        raise RecsysError(f"param {param}: expected a whole number, got {value!r}") from e
    if n < minimum or (maximum is not None and n > maximum):
        bounds = f"{minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise RecsysError(f"param {param}: expected {bounds}, got {n}")
    return n


def statement(settings: Settings, name: str) -> str:
    """The text of `sql/orchestration/<name>.sql`."""
    return load_sql(settings, f"orchestration/{name}")
