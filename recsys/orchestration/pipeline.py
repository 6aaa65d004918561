"""The nightly pipeline as plain functions: one per task of the `recsys_nightly` DAG.

Each function takes the settings and plain values (the campaign date, params, the run id) and
returns a small JSON-able dict that Airflow keeps as the task's XCom; the data itself stays in
PostgreSQL. The DAG files, `recsys demo`, `recsys simulate` and the tests all call these same
functions. Every one is safe to run again: loads are keyed by file checksum, features replace
their date's partition, training reuses the model already trained for the date, and scoring
upserts on (campaign date, user), so re-running a night gives the same offers.

This module imports nothing from Airflow at import time: `airflow_settings()` looks the
`recsys_db` connection up only when a task runs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from recsys.config import Config, load_config
from recsys.config.settings import Settings
from recsys.errors import RecsysError
from recsys.orchestration.runtime import (
    CONNECTION_ID,
    add_listener,
    airflow_settings,
    campaign_date_for,
    jsonable,
    reference_time,
    seconds,
    statement,
    step,
    url,
    whole,
)

__all__ = [
    "CONNECTION_ID",
    "MODES",
    "add_listener",
    "airflow_settings",
    "build_features",
    "campaign_date_for",
    "check_refusals",
    "dispatch",
    "evaluate",
    "extract",
    "ingest_feedback",
    "migrate",
    "publish",
    "reference_time",
    "report",
    "score_shard",
    "shard_list",
    "train",
]

log = logging.getLogger(__name__)

MODES = ("auto", "retrain", "fine_tune")
# --- tasks ----------------------------------------------------------------------------------------


@step("migrate")
def migrate(settings: Settings) -> dict[str, Any]:
    """Apply pending migrations and changed views/functions (a no-op when up to date)."""
    from recsys.db import connect
    from recsys.db.migrate import migrate as apply

    started = time.perf_counter()
    with connect(url(settings)) as conn:
        result = apply(conn, settings)
    log.info("migrate: %s", result.summary())
    return {"summary": result.summary(), "seconds": seconds(started)}


def _outcomes(results: Iterable[Any], status: str) -> list[dict[str, str]]:
    return [{"file": r.path.name, "message": r.describe()} for r in results if r.status == status]


@step("extract")
def extract(settings: Settings, campaign_date: dt.date) -> dict[str, Any]:
    """Load the inbox's new files (events, users, past offers) with the night as reference time.

    Files already loaded are known by checksum and moved aside, so a re-run loads nothing twice.
    A refused file (unreadable, or too many rejected rows) does not stop the night: the other
    files load and the night goes on with them; the refusal is in `load_log` and in the result,
    and the `inbox_refusals` task (`check_refusals`) fails the run on it. A file that may still be
    arriving is left in the inbox (`waiting`) for a later run.
    """
    from recsys.data.extract import load_inbox
    from recsys.db import connect

    started = time.perf_counter()
    with connect(url(settings)) as conn:
        results = load_inbox(conn, settings, reference_at=reference_time(campaign_date))
    for r in results:
        (log.warning if r.status in ("refused", "waiting") else log.info)("extract: %s", r.describe())
    return {
        "files": [{"file": r.path.name, "status": r.status} for r in results],
        "rows_loaded": sum(r.total("loaded") for r in results),
        "rows_rejected": sum(r.total("rejected") for r in results),
        "refused": _outcomes(results, "refused"),
        "waiting": _outcomes(results, "waiting"),
        "seconds": seconds(started),
    }


@step("ingest_feedback")
def ingest_feedback(settings: Settings, campaign_date: dt.date) -> dict[str, Any]:
    """Load `feedback*.csv` files (outcomes of our own offers) still in the inbox into `offer_events`.

    The inbox load (`extract`) takes the feedback files present when it runs; this catches those
    that arrived since, and counts what the night's feedback holds. Events are recorded once per
    (offer, event) and files are known by checksum, so a re-run adds nothing. Refused and waiting
    files are handled as in `extract`.
    """
    from recsys.data.extract import load_inbox
    from recsys.db import connect, fetch_value

    started = time.perf_counter()
    with connect(url(settings)) as conn:
        results = load_inbox(conn, settings, reference_at=reference_time(campaign_date), feedback_only=True)
        events = fetch_value(
            conn, statement(settings, "offer_events_last_day"), {"reference_at": reference_time(campaign_date)}
        )
    for r in results:
        (log.warning if r.status in ("refused", "waiting") else log.info)("ingest_feedback: %s", r.describe())
    if not results:
        log.info("ingest_feedback: no new feedback files in %s", settings.inbox)
    return {
        "files": [r.path.name for r in results if r.status != "waiting"],
        "rows_loaded": sum(r.total("loaded") for r in results),
        "events_last_day": int(events),
        "refused": _outcomes(results, "refused"),
        "waiting": _outcomes(results, "waiting"),
        "seconds": seconds(started),
    }


@step("inbox_refusals")
def check_refusals(settings: Settings, campaign_date: dt.date) -> dict[str, Any]:
    """Fail when an input file of this night was refused, so the run ends failed (red).

    Reads `load_log` (the loads whose reference time is this night's), not the extract task's
    result: a retry of the night finds the refused file gone from the inbox (it is in `refused/`)
    but the refusal still recorded, so no number of retries turns it green. A refusal is made good
    when a file of the same name loads later for the same night (fixed, dropped again, night re-run).
    """
    from recsys.data.extract import night_refusals
    from recsys.db import connect

    started = time.perf_counter()
    with connect(url(settings)) as conn:
        refused = night_refusals(conn, settings, reference_time(campaign_date))
    if refused:
        files = "; ".join(
            f"{r['file_name']} (load {r['load_id']}): {r['message'].removeprefix(r['file_name'] + ': ')}"
            for r in refused
        )
        raise RecsysError(
            f"{len(refused)} input file(s) refused for the night of {campaign_date}; the night ran on the other "
            f"files. {files}. Fix the file and drop it into the inbox again (the refused one is in "
            f"{settings.inbox / 'refused'}; its rejects are in recsys.load_rejects)"
        )
    return {"refused": 0, "seconds": seconds(started)}


@step("features")
def build_features(settings: Settings, campaign_date: dt.date) -> dict[str, Any]:
    """Features as of the campaign date (events before its 00:00 UTC only); replaces the date."""
    from recsys.data.features import build_features as build
    from recsys.db import connect

    started = time.perf_counter()
    with connect(url(settings)) as conn:
        result = build(conn, settings, campaign_date)
    log.info("features: %s", result.describe())
    return {"as_of": campaign_date.isoformat(), "users": int(result.users), "seconds": seconds(started)}


@step("train")
def train(
    settings: Settings,
    campaign_date: dt.date,
    *,
    mode: str = "auto",
    total_timesteps: int | None = None,
    seed: int | None = None,
    force: bool = False,
    frequency_cap: int | None = None,
) -> dict[str, Any]:
    """Retrain or fine-tune PPO on the night's users, gate it and register it.

    A model already trained on this campaign date is reused (a re-run of the night must give the
    same offers); `force` trains another one anyway. `frequency_cap` (the DAG param) replaces the
    configuration's cap in the simulated nights PPO learns in and the gate's rollouts, as scoring
    applies it.
    """
    from recsys.db import connect, fetch_all

    if mode not in MODES:
        raise RecsysError(f"param mode: expected one of {', '.join(MODES)}, got {mode!r}")
    config = _run_config(settings, frequency_cap)
    started = time.perf_counter()
    with connect(url(settings)) as conn:
        if not force:
            done = fetch_all(conn, statement(settings, "model_trained_on"), {"day": campaign_date})
            if done:
                row = done[0]
                log.info("train: model %s was already trained for %s: reused", row["model_version"], campaign_date)
                return {
                    "model_version": row["model_version"],
                    "mode": row["training_mode"],
                    "decision": row["gate_decision"],
                    "is_champion": bool(row["is_champion"]),
                    "total_timesteps": int(row["total_timesteps"]),
                    "reused": True,
                    "seconds": seconds(started),
                }
        from recsys.orchestration.train import TrainConfig
        from recsys.orchestration.train import train as fit

        hyper = TrainConfig().with_overrides(total_timesteps=total_timesteps, seed=seed)
        result = fit(
            conn,
            settings,
            config=config,
            as_of=campaign_date,
            mode=mode,
            train_config=hyper,
        )
    record, decision = result.record, result.decision
    return jsonable(
        {
            "model_version": record.model_version,
            "mode": record.training_mode,
            "parent_version": record.parent_version,
            "decision": decision.decision,
            "is_champion": decision.promoted,
            "total_timesteps": record.total_timesteps,
            "simulator_value": result.evaluation.simulator_value,
            "random_value": result.evaluation.random_value,
            "mode_reason": result.mode_reason,
            "baseline_crowned": result.baseline[0].model_version if result.baseline is not None else None,
            "reused": False,
            "seconds": seconds(started),
        }
    )


@step("evaluate")
def evaluate(
    settings: Settings, campaign_date: dt.date, *, model_version: str | None = None, frequency_cap: int | None = None
) -> dict[str, Any]:
    """The champion's metrics on the night's users: simulator values and off-policy estimates
    (`frequency_cap`: the DAG param, in the rollouts over the horizon)."""
    from recsys.db import connect
    from recsys.evaluation.model_eval import evaluate_model

    started = time.perf_counter()
    config = _run_config(settings, frequency_cap)
    with connect(url(settings)) as conn:
        result = evaluate_model(conn, config, model_version=model_version, as_of=campaign_date, n_boot=100)
    metrics = result.to_dict()
    metrics.pop("off_policy", None)
    return jsonable({"model_version": result.model_version, **metrics, "seconds": seconds(started)})


def _run_config(settings: Settings, frequency_cap: int | None) -> Config:
    """The product configuration of this run: the file's, with the DAG param `frequency_cap`
    replacing its `[campaign.frequency_cap] total` when given."""
    config = load_config(settings.config)
    if frequency_cap is not None:
        config = config.with_rules(cap_total=whole(frequency_cap, "frequency_cap", minimum=1))
    return config


def shard_list(shards: int) -> list[int]:
    """The shard numbers 0..N-1 the scoring task is mapped over."""
    return list(range(whole(shards, "shards", minimum=1, maximum=64)))


@step("score")
def score_shard(
    settings: Settings,
    campaign_date: dt.date,
    *,
    run_id: str,
    shard: int,
    shards: int,
    dry_run: bool = False,
    model_version: str | None = None,
    frequency_cap: int | None = None,
) -> dict[str, Any]:
    """Score shard K of N of the night's active users and write their offers (unpublished).

    The campaign rules are the configuration's; `frequency_cap` (the DAG param) replaces its
    `[campaign.frequency_cap] total` for this run only.

    The shard's rows are replaced in one transaction keyed on (campaign date, user), so a cleared
    shard re-runs alone and changes nothing that was already right. A shard of a run that is
    already published is left as it is (its offers may be with senders already).
    """
    from recsys.campaign import score_campaign
    from recsys.db import connect, fetch_all

    started = time.perf_counter()
    with connect(url(settings)) as conn:
        done = fetch_all(conn, statement(settings, "published_shard_counts"), {"run_id": run_id, "shard": int(shard)})
    if done:  # a shard of a published run cleared in the UI: its offers are out already, keep them
        log.info("score: run %s is published and shard %s is done: nothing to do", run_id, shard)
        return jsonable({**done[0]["counts"], "shard": int(shard), "already_published": True, "seconds": 0.0})
    config = _run_config(settings, frequency_cap)
    with connect(url(settings)) as conn:
        result = score_campaign(
            conn,
            settings,
            campaign_date,
            config=config,
            run_id=run_id,
            shard=int(shard),
            shards=int(shards),
            dry_run=bool(dry_run),
            model_version=model_version,
        )
    return jsonable({**dict(result), "shard": int(shard), "seconds": seconds(started)})


@step("publish")
def publish(settings: Settings, run_id: str, *, dry_run: bool = False) -> dict[str, Any]:
    """Make the run's offers claimable once every shard is done (a dry run publishes nothing)."""
    started = time.perf_counter()
    if dry_run:
        log.info("publish: dry run %s: nothing to publish", run_id)
        return {"run_id": run_id, "published": False, "dry_run": True, "seconds": seconds(started)}
    from recsys.campaign import publish_run
    from recsys.db import connect, fetch_value

    with connect(url(settings)) as conn:
        state = fetch_value(conn, statement(settings, "run_state"), {"run_id": run_id})
        if state == "published":  # a cleared publish task re-runs as a no-op
            log.info("publish: run %s is already published", run_id)
            return {"run_id": run_id, "published": True, "already": True, "seconds": seconds(started)}
        result = publish_run(conn, settings, run_id)
    return jsonable({**dict(result), "run_id": run_id, "seconds": seconds(started)})


@step("report")
def report(
    settings: Settings,
    run_id: str,
    campaign_date: dt.date,
    *,
    tasks: Mapping[str, Any],
) -> dict[str, Any]:
    """Write the night's report into `campaign_runs.report` and return its headline numbers.

    `tasks` maps each task name to the dict it returned (a list of dicts for the mapped shards).
    The report holds seconds per task, the model (training and gate), the champion's metrics and
    the run's counts; writing it again replaces it.
    """
    from recsys.db import connect, fetch_all

    seconds: dict[str, float] = {}
    for name, result in tasks.items():
        if isinstance(result, Mapping):
            seconds[name] = float(result.get("seconds", 0.0))
        elif isinstance(result, Iterable) and not isinstance(result, str | bytes):
            parts = [float(r.get("seconds", 0.0)) for r in result if isinstance(r, Mapping)]
            seconds[name] = round(max(parts, default=0.0), 3)
            seconds[f"{name}_sum"] = round(sum(parts), 3)
    body = jsonable(
        {
            "campaign_date": campaign_date,
            "seconds_per_task": seconds,
            "model": tasks.get("train") or {},
            "evaluation": tasks.get("evaluate") or {},
            "extract": {k: v for k, v in (tasks.get("extract") or {}).items() if k != "seconds"},
            "features": {k: v for k, v in (tasks.get("features") or {}).items() if k != "seconds"},
        }
    )
    with connect(url(settings)) as conn:
        with conn.cursor() as cur:
            cur.execute(statement(settings, "run_report_update"), {"report": json.dumps(body), "run_id": run_id})
            row = cur.fetchone()
        if row is None:
            raise RecsysError(f"report: no campaign run {run_id!r} (did the score task run?)")
        state, dry_run, model_version, counts = row
        offers = fetch_all(conn, statement(settings, "run_offers_by_channel"), {"run_id": run_id})
    summary = {
        "run_id": run_id,
        "campaign_date": campaign_date.isoformat(),
        "state": state,
        "dry_run": bool(dry_run),
        "model_version": model_version,
        "offers_by_channel": {r["channel"]: int(r["n"]) for r in offers},
        "counts": counts,
        "seconds_per_task": seconds,
    }
    log.info("report: %s", json.dumps(summary, default=str))
    return jsonable(summary)


@step("dispatch")
def dispatch(settings: Settings, channel: str, *, adapter: str | None = None) -> dict[str, Any]:
    """Run the reference sender once for one channel: claim what is due, send, ack, then stop.

    Adapter: `adapter`, else `RECSYS_DISPATCH_ADAPTER`, else `jsonl` (data/outbox/<channel>.jsonl).
    """
    import os

    from recsys.sender import default_worker, run_sender
    from recsys.sender.adapters import make_adapter
    from recsys.sender.protocol import ProtocolClient

    adapter = adapter or os.environ.get("RECSYS_DISPATCH_ADAPTER") or "jsonl"
    started = time.perf_counter()
    sender = make_adapter(adapter, settings, channel=channel)
    worker = f"airflow-dispatch {default_worker()}"
    try:
        with ProtocolClient(
            url(settings), channel=channel, worker=worker, lease_seconds=settings.sender_lease_seconds
        ) as client:
            stats = run_sender(
                client, sender, batch=settings.sender_batch, once=True, poll_seconds=settings.sender_poll_seconds
            )
    finally:
        sender.close()
    log.info("dispatch %s via %s: %s", channel, adapter, stats.describe())
    return {
        "channel": channel,
        "adapter": adapter,
        "claimed": stats.claimed,
        "sent": stats.sent,
        "failed": stats.failed,
        "released": stats.released,
        "seconds": seconds(started),
    }
