"""Campaign scoring: tonight's offer for every eligible user, written as scheduled offers.

`score_campaign` is the stage the CLI (`recsys score`) and the nightly DAG call; `publish_run`
makes a run's offers claimable. Steps of one run (or one shard of it):

1. load: one COPY of every user with features as of the campaign date (of the shard), with
   consent, recent offers and conversions, computed in SQL;
2. score: eligibility and the allowed-action mask (consent and address, frequency caps, cooldown)
   in numpy, the champion's greedy action (any registered model through
   `recsys.evaluation.registry.load_policy`: PPO's masked logits in batched torch, or the rule
   heuristic), the holdout and exploration draws from stable hashes, the explored offers from the
   configured explorer (`recsys.campaign.explore`: the newest challenger's softened probabilities,
   or uniform), exact propensities;
3. render: each distinct (channel, offer type, value, category) once;
4. write: COPY of the decisions into a staging table, then one upsert into campaign_offers (the
   schedule and the first-name fill computed in SQL; offers only, never rests), the holdout rows,
   every scored user's decision (campaign_decisions: offer, rest, holdout or skipped) and the
   shard row, in one transaction. A run killed before its commit leaves nothing; a re-run replaces scheduled offers
   and never touches claimed, sent, failed, expired or cancelled ones.

This module runs those steps; each lives in a module of its own: `load` (the users, the model
version), `decide` (masks, skip reasons, the policy's and the exploration's choices), `write`
(staging, the partition attach or upsert, the holdout), `runs` (run and shard rows, counts) and
`publish`. The names other code imports from here (`score_campaign`, `publish_run`,
`choose_actions`, ...) stay importable from here.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from recsys.campaign.decide import (
    CHANNELS,
    SKIP_REASONS,
    allowed_mask,
    choose_actions,
    decide_observed,
    skip_reasons,
)
from recsys.campaign.explore import load_explorer, resolve_explorer
from recsys.campaign.load import DateCodes, date_codes, load_users, resolve_model
from recsys.campaign.messages import Renderer
from recsys.campaign.pgcopy import binary_copy
from recsys.campaign.publish import check_moment, publish_run
from recsys.campaign.queries import campaign_sql
from recsys.campaign.runs import default_run_id, finish_shard, mark_failed, parse_shard, shard_counts, start_run
from recsys.campaign.write import Decisions, partition_name, render_messages, skip_codes, write_decisions
from recsys.config.catalog import Catalog
from recsys.config.features import BEFORE_PRIORS_HINT
from recsys.config.product import Config
from recsys.config.rules import CampaignRules
from recsys.config.settings import Settings
from recsys.db import Connection, fetch_value
from recsys.errors import RecsysError
from recsys.evaluation.registry import ModelRecord, get_model, load_policy
from recsys.model.observation import normalise

log = logging.getLogger(__name__)

__all__ = [
    "CHANNELS",
    "SKIP_REASONS",
    "Decisions",
    "allowed_mask",
    "binary_copy",
    "choose_actions",
    "partition_name",
    "publish_run",
    "score_campaign",
    "skip_reasons",
]


def score_campaign(
    conn: Connection,
    settings: Settings,
    campaign_date: dt.date,
    *,
    config: Config,
    run_id: str | None = None,
    shard: int | None = None,
    shards: int = 1,
    dry_run: bool = False,
    model_version: str | None = None,
    publish_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """Score one campaign date (or one shard K of N of it) and write its offers.

    `config` gives the catalog and the campaign rules (`config.with_rules(...)` for one run's
    overrides). It commits on `conn` as it goes (the run and shard rows, the offers, a failure), so
    that other sessions see a run's progress: call it with no work of your own pending.

    Without a shard (shard None, shards 1) the run is published at the end; a shard, even 0 of 1,
    leaves publishing to `publish_run`. `publish_at` (timezone-aware) is the publish moment the
    offers are scheduled for, and the unsharded run's publish moment; None: the clock at each step.
    Benchmarks and tests pin it. Returns the summary counts.
    """
    k, n = parse_shard(shard, shards)
    check_moment(publish_at, "publish_at")
    rules, catalog = config.rules, config.catalog
    run_id = run_id or default_run_id(campaign_date)
    sql_dir = settings.sql_dir
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    renderer = Renderer(
        catalog,
        rules.templates_dir,
        fallback=rules.first_name_fallback,
        sms_max_chars=rules.sms_max_chars,
        validity_hours=rules.validity_hours,
    )
    before_priors = fetch_value(conn, campaign_sql(sql_dir, "has_features"), {"day": campaign_date})
    if before_priors is None:
        raise RecsysError(
            f"no features as of {campaign_date}: build them first (`recsys features --as-of {campaign_date}`)"
        )
    # one pass over the date's features for its categories and segments: the longest category checks
    # the templates, and the load reads the users' categories and segments as codes into them
    codes = date_codes(conn, sql_dir, campaign_date)
    renderer.check_all(codes.longest_categories)  # template problems surface before anything is written
    version = resolve_model(conn, sql_dir, run_id, campaign_date, model_version)
    record = get_model(conn, version)
    record.check_compatible(catalog)
    explorer = resolve_explorer(conn, sql_dir, run_id, catalog, rules)
    readers = sorted({r.model_version for r in (record, explorer) if r is not None and r.feature_columns() is None})
    if before_priors and readers:
        # a model of an earlier feature set reads none of the missing columns: it scores such a date
        raise RecsysError(
            f"the features as of {campaign_date} lack columns that model {' and '.join(readers)} "
            f"read{'s' if len(readers) == 1 else ''}{BEFORE_PRIORS_HINT.replace('DATE', str(campaign_date))}"
        )
    rules_json = {
        **rules.as_json(),
        "timing_delay_minutes": dict(catalog.timing_delay_minutes),
        "exploration_source": explorer.model_version if explorer is not None else "uniform",
    }
    start_run(conn, sql_dir, run_id, campaign_date, version, k, n, dry_run, rules_json)
    try:
        summary = _score_shard(
            conn,
            sql_dir,
            run_id,
            campaign_date,
            k,
            n,
            dry_run,
            (record, explorer),
            rules,
            catalog,
            renderer,
            codes,
            timings,
            publish_at,
        )
    except BaseException as e:
        _record_failure(conn, sql_dir, run_id, (k, n), e)
        raise
    conn.commit()
    timings["total"] = time.perf_counter() - t0
    summary["timings"] = timings
    if shard is None and n == 1 and not dry_run:
        summary["publish"] = publish_run(conn, settings, run_id, published_at=publish_at)
        conn.commit()
    return summary


def _record_failure(conn: Connection, sql_dir: Path, run_id: str, shard: tuple[int, int], error: BaseException) -> None:
    """Roll the shard's work back and record its failure; a broken connection cannot, and then
    the failure is only logged (the caller raises the original error either way)."""
    k, n = shard
    try:
        conn.rollback()
        mark_failed(conn, sql_dir, run_id, k, f"shard {k}/{n}: {error}")
    except Exception:
        log.exception("score: could not record the failure of run %s shard %s", run_id, k)


def _score_shard(
    conn: Connection,
    sql_dir: Path,
    run_id: str,
    campaign_date: dt.date,
    k: int,
    n: int,
    dry_run: bool,
    records: tuple[ModelRecord, ModelRecord | None],
    rules: CampaignRules,
    catalog: Catalog,
    renderer: Renderer,
    codes: DateCodes,
    timings: dict[str, float],
    publish_at: dt.datetime | None,
) -> dict[str, Any]:
    # importing torch / SB3 and loading the model (seconds of Python) overlaps the load's COPY, which
    # waits on the server with the GIL released; "model_load" is what is left to wait for after it.
    # The explorer's policy (a challenger) is loaded the same way, once per shard.
    record, explorer_record = records
    version = record.model_version
    # the champion exploring with itself is loaded once, and scores and explores in one pass
    itself = explorer_record is not None and explorer_record.model_version == version
    with ThreadPoolExecutor(1) as pool:
        model = pool.submit(load_policy, record, catalog)
        explorer = pool.submit(load_explorer, None if itself else explorer_record, catalog, rules)
        t = time.perf_counter()
        users = load_users(conn, sql_dir, campaign_date, rules, k, n, codes)
        timings["load"] = time.perf_counter() - t

        t = time.perf_counter()
        user_ids = users.user_ids
        channel_ok, mask = allowed_mask(users, catalog, rules)
        reasons = skip_reasons(users, channel_ok, mask)
        eligible = reasons == ""
        policy, explore_with = model.result(), explorer.result()
        if itself:
            explore_with = load_explorer(explorer_record, catalog, rules, policy=policy)
        timings["model_load"] = time.perf_counter() - t
    rows = np.flatnonzero(eligible)
    ids = user_ids[rows]
    # normalised in place (the raw values are not needed again), then the eligible users' rows
    # gathered into one C-ordered float32 matrix, the policy's input; the full matrix goes
    raw = users.pop_features()
    obs = normalise(raw, out=raw)[rows]
    del raw
    if len(rows) < len(mask):
        mask = mask[rows]
    action, propensity, explore, holdout = decide_observed(policy, obs, mask, ids, campaign_date, rules, explore_with)
    del obs, mask
    timings["score"] = time.perf_counter() - t

    t = time.perf_counter()
    categories = users.top_category(rows)
    message_id, messages = render_messages(renderer, catalog, action, categories)
    timings["render"] = time.perf_counter() - t

    counts = shard_counts(catalog, reasons, action, explore, holdout)

    t = time.perf_counter()
    if not dry_run:
        decisions = Decisions(
            run_id=run_id,
            campaign_date=campaign_date,
            shard=k,
            shards=n,
            model_version=version,
            user_ids=ids,
            actions=action,
            propensity=propensity,
            is_exploration=explore,
            is_holdout=holdout,
            message_id=message_id,
            category_codes=users["category_code"][rows],
            segment_codes=users["segment_code"][rows],
            categories=users.categories,
            segments=users.segments,
            messages=messages,
            is_rest=catalog.is_rest(action),
            skipped_user_ids=user_ids[~eligible],
            skip_codes=skip_codes(reasons[~eligible]),
            skipped_segment_codes=users["segment_code"][~eligible],
        )
        counts.update(write_decisions(conn, sql_dir, decisions, rules, catalog, timings, publish_at))
    timings["write"] = time.perf_counter() - t
    finish_shard(conn, sql_dir, run_id, (k, n), dry_run, counts, timings)
    return {
        "run_id": run_id,
        "campaign_date": campaign_date.isoformat(),
        "shard": k,
        "shards": n,
        "model_version": version,
        "dry_run": dry_run,
        **counts,
    }
