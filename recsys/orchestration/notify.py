"""When a night fails or runs late, somebody hears of it: timeouts, failure notices, the deadline.

The DAG files call `nightly_timeouts()` and `publish_deadline_interval()` while they are parsed
(environment variables only: cheap, nothing heavy imported, no database or connection looked up)
and name `task_failed` (a task's, and a run's, `on_failure_callback`) and
`publish_deadline_missed` (the callback of the "published by" deadline alert) as callbacks, which
Airflow calls at run time.

A notice is always one log line on the `recsys.orchestration.notify` logger, naming the DAG, the task, the run,
the try, the exception and the task's log in the UI. When `RECSYS_ALERT_EMAIL` is set, it is also
mailed there through Airflow's SMTP provider, with the Airflow connection
`RECSYS_ALERT_SMTP_CONN_ID` (default `smtp_default`).
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from recsys.errors import ConfigError

log = logging.getLogger("recsys.orchestration.notify")

DEFAULT_PUBLISH_DEADLINE = "06:00"


@dataclass(frozen=True)
class NightlyTimeouts:
    """Minutes the nightly DAG may take. Each field maps to `RECSYS_NIGHTLY_<FIELD>_TIMEOUT_MINUTES`.

    Defaults from the nightly benchmark (docs/performance.md: 100k users on a shared 2-core
    machine) with room for larger shops and busy machines; a task past its timeout fails (and is
    retried), a run past `run` fails with its running tasks.
    """

    run: int = 360
    """The whole run (`dagrun_timeout`): a retrain night took about 50 min, a fine-tune night 10."""
    task: int = 15
    """Every task not named below (migrate 8 s, publish 0.9 s, report 0.7 s measured)."""
    extract: int = 60
    """Loading the inbox: 286 s for 3.17M events (a 90-day backfill)."""
    features: int = 30
    """Features as of the campaign date: 23 s for 100k users."""
    train: int = 180
    """Training through the gate: 403 s fine-tuning, 2,491 s retraining (100k users)."""
    evaluate: int = 30
    """The champion's evaluation: 120 s for 100k users."""
    score: int = 30
    """One scoring shard: 29-32 s for 1M users in one shard."""

    def of(self, name: str) -> dt.timedelta:
        """The timeout of the task or run `name`, as Airflow takes it."""
        return dt.timedelta(minutes=getattr(self, name))


def nightly_timeouts(env: Mapping[str, str] | None = None) -> NightlyTimeouts:
    """Timeouts from `RECSYS_NIGHTLY_<FIELD>_TIMEOUT_MINUTES` variables (whole minutes, >= 1)."""
    env = os.environ if env is None else env
    values: dict[str, int] = {}
    for f in fields(NightlyTimeouts):
        name = f"RECSYS_NIGHTLY_{f.name.upper()}_TIMEOUT_MINUTES"
        raw = env.get(name, "").strip()
        if not raw:
            continue
        try:
            values[f.name] = int(raw)
        except ValueError as e:
            raise ConfigError(f"{name}: expected a whole number of minutes, got {raw!r}") from e
        if values[f.name] < 1:
            raise ConfigError(f"{name}: must be at least 1 minute, got {values[f.name]}")
    return NightlyTimeouts(**values)


def _hh_mm(name: str, text: str) -> dt.timedelta:
    hours, sep, minutes = text.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ConfigError(f"{name}: expected HH:MM or +HH:MM, got {text!r}")
    return dt.timedelta(hours=int(hours), minutes=int(minutes))


def publish_deadline_interval(value: str | None, schedule: str) -> dt.timedelta | None:
    """How long after a run's logical date its offers must be published; None: no deadline.

    `value` is `RECSYS_PUBLISH_DEADLINE`: `HH:MM` is a UTC time of day, the first one after the
    run's scheduled start (which, with Airflow 3's cron timetables, is its logical date), so the
    schedule must start at a fixed time of day (`M H * * *`, `@daily`); `+HH:MM` is a time after
    the logical date whatever the schedule; `off` means no deadline. Unset: `06:00`.
    """
    name = "RECSYS_PUBLISH_DEADLINE"
    text = (value or "").strip() or DEFAULT_PUBLISH_DEADLINE
    if text.lower() in ("off", "none"):
        return None
    if text.startswith("+"):
        interval = _hh_mm(name, text[1:])
        if interval <= dt.timedelta(0):
            raise ConfigError(f"{name}: a time after the logical date must be positive, got {text!r}")
        return interval
    at = _hh_mm(name, text)
    if at >= dt.timedelta(days=1):
        raise ConfigError(f"{name}: {text!r} is not a time of day (00:00 to 23:59)")
    cron = schedule.strip().split()
    if schedule.strip() in ("@daily", "@midnight"):
        start = dt.timedelta(0)
    elif len(cron) == 5 and cron[0].isdigit() and cron[1].isdigit():
        start = dt.timedelta(hours=int(cron[1]), minutes=int(cron[0]))
    else:
        raise ConfigError(
            f"{name}: {text!r} is a time of day, but the schedule {schedule!r} does not start at a fixed "
            "time of day; give the deadline as a time after the run's start instead, e.g. '+04:00'"
        )
    interval = (at - start) % dt.timedelta(days=1)
    return interval or dt.timedelta(days=1)


def publish_deadline_label(value: str | None) -> str:
    """`RECSYS_PUBLISH_DEADLINE` as the notice says it: `06:00 UTC`, `04:00 after the logical date`."""
    text = (value or "").strip() or DEFAULT_PUBLISH_DEADLINE
    return f"{text[1:]} after the logical date" if text.startswith("+") else f"{text} UTC"


# --- notices (run time) -----------------------------------------------------------------------------


def _one_line(text: str, limit: int = 500) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _exception_text(exception: Any) -> str:
    if exception is None:
        return "no exception recorded"
    if isinstance(exception, BaseException):
        return _one_line(f"{type(exception).__name__}: {exception}")
    return _one_line(str(exception))


def failure_notice(context: Mapping[str, Any]) -> tuple[str, str] | None:
    """The subject and the one-line notice for an Airflow failure callback's context.

    A task's context names the task, its map index and try; a run's (Airflow calls the DAG's
    callback with `reason`) names the reason and the last task. A run that failed because a task
    failed gets no second notice: the task's said it. None when there is nothing new to say.
    """
    ti = context.get("ti") or context.get("task_instance")
    reason = context.get("reason")
    if reason == "task_failure":
        return None
    dag = context.get("dag")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag, "dag_id", None) or "unknown DAG"
    run_id = getattr(ti, "run_id", None) or context.get("run_id") or "unknown run"
    if reason is not None:
        last = f"; last task {ti.task_id}" if ti is not None else ""
        subject = f"[recsys] {dag_id}: run {run_id} failed ({reason})"
        return subject, f"{dag_id} run failed: run {run_id}, reason {reason}{last}"
    task = getattr(ti, "task_id", "unknown task")
    map_index = getattr(ti, "map_index", -1)
    if map_index is not None and map_index >= 0:
        task = f"{task}[{map_index}]"
    try_number = getattr(ti, "try_number", None)
    max_tries = getattr(getattr(ti, "task", None), "retries", None)
    tries = f"try {try_number}" + (f" of {max_tries + 1}" if try_number is not None and max_tries is not None else "")
    log_url = getattr(ti, "log_url", None) or "no log link"
    exception = _exception_text(context.get("exception"))
    subject = f"[recsys] {dag_id}: task {task} failed in run {run_id}"
    return subject, f"{dag_id} task failed: task {task}, run {run_id}, {tries}: {exception} (log: {log_url})"


def _recipients(settings: Any) -> list[str]:
    return [a.strip() for a in settings.alert_email.split(",") if a.strip()]


def _mail(subject: str, notice: str) -> None:
    """Mail the notice when `RECSYS_ALERT_EMAIL` is set, through Airflow's SMTP provider."""
    from recsys.config.settings import load_settings

    settings = load_settings()
    to = _recipients(settings)
    if not to:
        return
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=settings.alert_smtp_conn_id) as hook:
        hook.send_email_smtp(
            to=to,
            from_email=hook.from_email or settings.smtp_from,
            subject=subject,
            html_content=f"<pre>{html.escape(notice)}</pre>",
        )
    log.info("failure notice mailed to %s", ", ".join(to))


def task_failed(context: Mapping[str, Any]) -> None:
    """`on_failure_callback` of the nightly DAG's tasks and runs: log the notice, mail it if configured."""
    found = failure_notice(context)
    if found is None:
        return
    subject, notice = found
    log.error("%s", notice)
    _mail(subject, notice)


def deadline_notice(context: Mapping[str, Any], published_by: str) -> tuple[str, str]:
    """Subject and one-line notice of a missed "published by" deadline (Airflow's deadline context)."""
    run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    dag_id = run.get("dag_id", "unknown DAG")
    run_id = run.get("dag_run_id") or run.get("run_id") or "unknown run"
    at = deadline.get("deadline_time")
    at_text = at.isoformat() if isinstance(at, dt.datetime) else str(at)
    subject = f"[recsys] {dag_id}: run {run_id} not published by {published_by}"
    notice = (
        f"{dag_id} deadline missed: run {run_id} (logical date {run.get('logical_date')}, state "
        f"{run.get('state')}) was not published by {published_by} ({at_text}); senders have no offers of it yet"
    )
    return subject, notice


async def publish_deadline_missed(context: Mapping[str, Any], published_by: str = "the deadline") -> None:
    """Callback of the nightly DAG's deadline alert (Airflow runs it in the triggerer)."""
    import asyncio

    subject, notice = deadline_notice(context, published_by)
    log.error("%s", notice)
    await asyncio.to_thread(_mail, subject, notice)
