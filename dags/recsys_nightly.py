"""
### recsys nightly campaign

Every night: apply migrations, load the inbox (behaviour, users, past offers) with the night's
00:00 UTC as reference time, ingest feedback files, build features as of the campaign date,
retrain or fine-tune the PPO policy through the promotion gate (a new catalog's first champion is
the rule heuristic; a trained model replaces it only on evidence from the logs), evaluate the champion, score every
active user in parallel shards, publish the run once every shard is in (only then can senders
claim its offers), and write a report into `recsys.campaign_runs.report`.

**Campaign date**: the run's logical date in UTC (a UI trigger without one uses the time it was
queued), or the `campaign_date` param.

**Re-running** is safe: a cleared task or a whole re-run of a night gives the same offers (loads
are keyed by checksum, features replace their date, training reuses the date's model, offers are
upserted per campaign date and user). A failed shard can be cleared and re-run alone.

**Database**: the Airflow connection `recsys_db` (a Postgres connection, or
`AIRFLOW_CONN_RECSYS_DB`), else `RECSYS_DATABASE_URL`. Schedule: `RECSYS_NIGHTLY_SCHEDULE`
(default `0 2 * * *`, UTC).

**Failures are visible**: every task has an `execution_timeout` and the run a `dagrun_timeout`
(`RECSYS_NIGHTLY_<TASK>_TIMEOUT_MINUTES`, see `recsys.orchestration.notify.NightlyTimeouts`); a failed task or
run is reported by `recsys.orchestration.notify` (a log line naming the task, run, try, error and log; a mail
through the SMTP provider when `RECSYS_ALERT_EMAIL` is set); a deadline alert fires when the run
is not finished by `RECSYS_PUBLISH_DEADLINE` (default `06:00` UTC).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk import (
    Asset,
    AsyncCallback,
    DeadlineAlert,
    DeadlineReference,
    Param,
    dag,
    get_current_context,
    task,
)

from recsys.orchestration import notify

CAMPAIGN_OFFERS = Asset("recsys://campaign_offers")
SCHEDULE = os.environ.get("RECSYS_NIGHTLY_SCHEDULE", "0 2 * * *")
TIMEOUTS = notify.nightly_timeouts()
PUBLISH_DEADLINE = os.environ.get("RECSYS_PUBLISH_DEADLINE", "")
PUBLISH_DEADLINE_AFTER = notify.publish_deadline_interval(PUBLISH_DEADLINE, SCHEDULE)


def _night() -> tuple[Any, dt.date, dict[str, Any]]:
    """Settings, campaign date and params of the running task (called at run time only)."""
    from recsys.orchestration import pipeline

    context = get_current_context()
    params = context["params"]
    dag_run = context["dag_run"]
    campaign_date = pipeline.campaign_date_for(
        context.get("logical_date"), getattr(dag_run, "run_after", None), params.get("campaign_date")
    )
    return pipeline.airflow_settings(), campaign_date, params


@dag(
    dag_id="recsys_nightly",
    schedule=SCHEDULE,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["recsys", "campaigns"],
    doc_md=__doc__,
    dagrun_timeout=TIMEOUTS.of("run"),
    on_failure_callback=notify.task_failed,
    deadline=None
    if PUBLISH_DEADLINE_AFTER is None
    else DeadlineAlert(
        name="published by",
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=PUBLISH_DEADLINE_AFTER,
        callback=AsyncCallback(
            notify.publish_deadline_missed,
            kwargs={"published_by": notify.publish_deadline_label(PUBLISH_DEADLINE)},
        ),
    ),
    default_args={
        "owner": "recsys",
        "retries": int(os.environ.get("RECSYS_NIGHTLY_RETRIES", "2")),
        "retry_delay": dt.timedelta(minutes=5),
        "execution_timeout": TIMEOUTS.of("task"),
        "on_failure_callback": notify.task_failed,
    },
    params={
        "mode": Param(
            "auto",
            enum=["auto", "retrain", "fine_tune"],
            description="auto fine-tunes the champion's PPO model (while the rule heuristic is champion: the "
            "newest PPO model of the catalog) unless there is none; retrain starts from scratch; fine_tune "
            "continues that model.",
        ),
        "total_timesteps": Param(
            200_000, type="integer", minimum=1, description="PPO environment steps (user-nights) to train for."
        ),
        "shards": Param(
            2, type="integer", minimum=1, maximum=64, description="Parallel scoring tasks (users split by hash)."
        ),
        "campaign_date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Score this date instead of the run's logical date (YYYY-MM-DD).",
        ),
        "dry_run": Param(False, type="boolean", description="Score and report without writing or publishing offers."),
        "frequency_cap": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description=(
                "Offers per user in the frequency-cap window for this run (empty: the configuration's rule); "
                "training and evaluation simulate the same cap."
            ),
        ),
        "force_train": Param(
            False, type="boolean", description="Train again even if a model was already trained for this date."
        ),
    },
)
def recsys_nightly() -> None:
    """The night's tasks and their order. Long on purpose: each task is a few lines that call one
    `recsys.orchestration.pipeline` stage, and keeping them in one body keeps the flow readable
    top to bottom, as the Airflow UI shows it."""

    @task
    def migrate() -> dict[str, Any]:
        from recsys.orchestration import pipeline

        settings, _, _ = _night()
        return pipeline.migrate(settings)

    @task(execution_timeout=TIMEOUTS.of("extract"))
    def extract() -> dict[str, Any]:
        from recsys.orchestration import pipeline

        settings, campaign_date, _ = _night()
        return pipeline.extract(settings, campaign_date)

    @task
    def ingest_feedback() -> dict[str, Any]:
        from recsys.orchestration import pipeline

        settings, campaign_date, _ = _night()
        return pipeline.ingest_feedback(settings, campaign_date)

    @task(retries=0)
    def inbox_refusals() -> dict[str, Any]:
        # Fails (red run, no retries) when extract or ingest_feedback refused a file of this night;
        # the other tasks go on with the files that loaded. It reads load_log, so retrying the
        # night does not turn a refusal green.
        from recsys.orchestration import pipeline

        settings, campaign_date, _ = _night()
        return pipeline.check_refusals(settings, campaign_date)

    @task(execution_timeout=TIMEOUTS.of("features"))
    def features() -> dict[str, Any]:
        from recsys.orchestration import pipeline

        settings, campaign_date, _ = _night()
        return pipeline.build_features(settings, campaign_date)

    @task(execution_timeout=TIMEOUTS.of("train"))
    def train() -> dict[str, Any]:
        from recsys.orchestration import pipeline

        settings, campaign_date, params = _night()
        return pipeline.train(
            settings,
            campaign_date,
            mode=params["mode"],
            total_timesteps=params["total_timesteps"],
            force=params["force_train"],
            frequency_cap=params.get("frequency_cap"),
        )

    @task(execution_timeout=TIMEOUTS.of("evaluate"))
    def evaluate() -> dict[str, Any]:
        from recsys.orchestration import pipeline

        settings, campaign_date, params = _night()
        return pipeline.evaluate(settings, campaign_date, frequency_cap=params.get("frequency_cap"))

    @task
    def shard_list() -> list[int]:
        from recsys.orchestration import pipeline

        return pipeline.shard_list(get_current_context()["params"]["shards"])

    @task(map_index_template="{{ shard_label }}", execution_timeout=TIMEOUTS.of("score"))
    def score(shard: int) -> dict[str, Any]:
        from recsys.orchestration import pipeline

        settings, campaign_date, params = _night()
        get_current_context()["shard_label"] = f"shard {shard} of {params['shards']}"  # type: ignore[literal-required]
        return pipeline.score_shard(
            settings,
            campaign_date,
            run_id=get_current_context()["run_id"],
            shard=shard,
            shards=params["shards"],
            dry_run=params["dry_run"],
            frequency_cap=params.get("frequency_cap"),
        )

    @task
    def publish(scored: list[dict[str, Any]]) -> dict[str, Any]:
        from recsys.orchestration import pipeline

        settings, _, params = _night()
        return pipeline.publish(settings, get_current_context()["run_id"], dry_run=params["dry_run"])

    @task(outlets=[CAMPAIGN_OFFERS])
    def report(tasks: dict[str, Any]) -> dict[str, Any]:
        from recsys.orchestration import pipeline

        settings, campaign_date, _ = _night()
        shards = tasks["score"]  # index by length: iterating a lazy XCom sequence probes one past its end
        tasks = {**tasks, "score": [shards[i] for i in range(len(shards))]}
        return pipeline.report(settings, get_current_context()["run_id"], campaign_date, tasks=tasks)

    migrated, extracted, feedback, built = migrate(), extract(), ingest_feedback(), features()
    trained, evaluated = train(), evaluate()
    shards = shard_list()
    scored = score.expand(shard=shards)
    published = publish(scored)
    migrated >> extracted >> feedback >> built >> trained >> evaluated >> shards
    feedback >> inbox_refusals()  # a leaf: a refused file fails the run, the night still scores
    report(
        {
            "migrate": migrated,
            "extract": extracted,
            "ingest_feedback": feedback,
            "features": built,
            "train": trained,
            "evaluate": evaluated,
            "score": scored,
            "publish": published,
        }
    )


dag = recsys_nightly()

if __name__ == "__main__":
    dag.test()
