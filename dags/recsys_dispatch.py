"""
### recsys dispatch

Runs the reference sender once per channel every few minutes: it claims the offers that are due
(published runs only, `scheduled_at` passed, consent re-checked), sends them through the
configured adapter, acks or fails each one, and stops when nothing more is due. Offers fall due
hours after the nightly run (send time, delays, quiet hours), hence the short schedule.

A claimed offer whose sender dies is claimed again after its lease, so a failed or cleared task
never loses or duplicates an offer (the offer id is the idempotency key passed to the provider).

Configuration: `RECSYS_DISPATCH_SCHEDULE` (default every 5 minutes), `RECSYS_DISPATCH_CHANNELS`
(default `email,sms,push`), `RECSYS_DISPATCH_ADAPTER` (default `jsonl`, appending to
`data/outbox/`), `RECSYS_DISPATCH_TIMEOUT_MINUTES` (one channel's task, default 20; the run: 30);
the database from the `recsys_db` connection, else `RECSYS_DATABASE_URL`. A failed task is
reported by `recsys.orchestration.notify` (a log line, and a mail when `RECSYS_ALERT_EMAIL` is set).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk import dag, task

from recsys.orchestration import notify

CHANNELS = [c.strip() for c in os.environ.get("RECSYS_DISPATCH_CHANNELS", "email,sms,push").split(",") if c.strip()]


@dag(
    dag_id="recsys_dispatch",
    schedule=os.environ.get("RECSYS_DISPATCH_SCHEDULE", "*/5 * * * *"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(minutes=30),
    tags=["recsys", "senders"],
    doc_md=__doc__,
    on_failure_callback=notify.task_failed,
    default_args={
        "owner": "recsys",
        "retries": 1,
        "retry_delay": dt.timedelta(minutes=1),
        # one channel's pass; a sender killed by it loses nothing (its claims come back after the lease)
        "execution_timeout": dt.timedelta(minutes=int(os.environ.get("RECSYS_DISPATCH_TIMEOUT_MINUTES", "20"))),
        "on_failure_callback": notify.task_failed,
    },
)
def recsys_dispatch() -> None:
    @task(map_index_template="{{ channel_label }}")
    def send(channel: str) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from recsys.orchestration import pipeline

        get_current_context()["channel_label"] = channel  # type: ignore[literal-required]
        return pipeline.dispatch(pipeline.airflow_settings(), channel)

    send.expand(channel=CHANNELS)


dag = recsys_dispatch()

if __name__ == "__main__":
    dag.test()
