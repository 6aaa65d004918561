"""`recsys simulate --nights N`: the nightly run against simulated users, night after night.

A fresh generated shop (`generate-data`: users, `history_days` of behaviour and past campaigns up
to the start date) is loaded into a database of its own; then, for each campaign date D:

1. **The nightly run** for D: the `recsys_nightly` DAG through `dag.test()` (or, with
   `--in-process`, the same stages called directly in the same order): extract the inbox with
   D 00:00 UTC as reference time, features as of D, train (`mode` auto: fine-tune the champion or
   retrain), gate, score every active user (offers, holdout, exploration) and publish.
2. **A simulated sender** sends every published offer of the night. It marks them `sent` in SQL at
   their `scheduled_at` instead of calling `claim_offers`, because `claim_offers` compares with the
   wall clock (`now()`) while the simulated nights lie in the past: their offers would be expired.
3. **Simulated users** respond to the offers actually sent, drawn from the generator's hidden
   truth for that user, action and night (fatigue from their offers of the 7 nights before):
   delivered, opened, clicked, converted (with the order's revenue), unsubscribed. The outcomes go
   in through `recsys.record_offer_event` (an unsubscribe revokes the channel's consent); clicks
   become sessions and conversions purchases, written with every user's organic behaviour of the
   day (`recsys.benchmark.synth.generate`'s session model, so holdout and untreated users shop too) as an
   `events_*.csv` file into the inbox, which the next night's extract loads. Events later than the
   next night's reference time wait for a later night's file.
4. **Valuation under the truth**: the expected value (the truth's reward, as in `recsys.evaluation.ope`)
   of the offers sent, per treated user, next to what the same users would be worth under uniform
   random over their allowed actions, the best single fixed offer of that night (chosen with the
   truth: a strong reference) and the oracle (each user's best allowed offer). The control group
   (holdout) gets no offer, so its incremental value is 0 by definition; the measured purchase
   revenue per user of the day, treated against holdout, is reported beside it. Intervals are 95%
   normal intervals over users, mean +- 1.96 sd / sqrt(n); `policy - fixed` is the paired difference.

5. **Valuation over a fixed cohort** (`recsys.benchmark.simulate.cohort`): the users active on night
   1, each valued on every night (no offer, a rest, the holdout or an unsubscribe: 0, never
   missing), against reference policies that each run their own closed loop under the truth
   (uniform random, the rule heuristic, the best fixed offer at its best cadence of every 1..7
   nights, a cadence-aware oracle), and, over nights 8-30, the bar's statistic: the paired lower 95%
   bound of policy - 1.15 x the best fixed offer at its best cadence.

The table is printed, saved as `values.csv` and `values.json`, and plotted to `values.png` in the
output folder; the cohort's table follows it (per night in `values.csv`, the summary over the
range under "cohort" in `values.json`). The truth is read here (to play the users and to measure) and never reaches the
database, the features or anything the policy learns from: the policy sees only the behaviour and
the offer outcomes that the simulated users produce.

The simulation runs in a database of its own, `recsys_simulate` by default, created on the server of
`RECSYS_DATABASE_URL` (or the embedded server) and replaced at each start: the configured database
itself is never touched. Files (generated shop, inbox, Airflow's local metadata, results) live in
`--out`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from psycopg2.extensions import parse_dsn

from recsys.benchmark.simulate.cohort import (
    Cohort,
    CohortLedger,
    CohortValues,
    ValueRange,
    format_cohort_table,
    reference_values,
)
from recsys.benchmark.simulate.config import DAY, VALUE_ROWS, SimulateConfig, epoch
from recsys.benchmark.simulate.runner import DagRunner, run_night_in_process
from recsys.benchmark.simulate.sender import (
    channel_ok,
    holdout_users,
    night_model,
    offers_by_night,
    offers_last_7d,
    record_responses,
    send_all,
)
from recsys.benchmark.simulate.users import SentOffers, SimulatedUsers
from recsys.benchmark.simulate.values import (
    Interval,
    NightValues,
    format_table,
    revenue_per_user,
    save_results,
    value_users,
)
from recsys.config import Config, load_config
from recsys.config.settings import Settings, load_settings
from recsys.db import connect, create_database, database_url
from recsys.errors import RecsysError

__all__ = [
    "DAY",
    "VALUE_ROWS",
    "Cohort",
    "CohortLedger",
    "CohortValues",
    "DagRunner",
    "Interval",
    "NightValues",
    "RecsysError",
    "SentOffers",
    "SimulateConfig",
    "SimulatedUsers",
    "SimulationResult",
    "ValueRange",
    "epoch",
    "format_table",
    "record_responses",
    "save_results",
    "send_all",
    "simulate",
    "value_users",
]


@dataclass
class SimulationResult:
    config: SimulateConfig
    nights: list[NightValues]
    paths: dict[str, Path]
    cohort: CohortValues | None = None
    cohort_summary: dict[str, Any] | None = None

    def table(self) -> str:
        return format_table(self.nights)


def prepare_database(settings: Settings, name: str) -> str:
    """Create (or replace) the simulation's own database on the configured server; its URL."""
    server = database_url(settings)
    params = parse_dsn(server)
    if params.get("dbname") == name:
        raise RecsysError(
            f"the configured database is {name!r}, the simulation's own: give the simulation another database name"
        )
    return create_database(server, name, replace=True)


def _check(config: SimulateConfig) -> None:
    if not re.fullmatch(r"recsys_sim[a-z0-9_]{0,50}", config.database):
        raise RecsysError(
            f"--database {config.database!r}: the simulation drops and recreates its database, so its name must "
            "start with recsys_sim (lower-case letters, digits, _)"
        )
    if config.frequency_cap is not None and config.frequency_cap < 1:
        raise RecsysError(f"--frequency-cap must be a whole number >= 1, got {config.frequency_cap!r}")
    for name in ("nights", "users", "timesteps", "history_days", "shards"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RecsysError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")


def simulate(config: SimulateConfig, settings: Settings | None = None, *, echo: bool = True) -> SimulationResult:
    """Generate a shop, then run `config.nights` nights with simulated sender and users."""
    _check(config)
    settings = settings or load_settings()
    out = Path(config.out)
    first = config.first_night()
    dates = [first + dt.timedelta(days=i) for i in range(config.nights)]
    for sub in ("shop", "inbox", "data", "airflow"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        if echo:
            print(text, flush=True)

    if echo:  # the stages' own log lines would bury the table
        logging.getLogger("recsys").setLevel(logging.WARNING)

    product = load_config(settings.config)
    if config.frequency_cap is not None:  # the nightly run gets it as the DAG param of that name
        product = product.with_rules(cap_total=config.frequency_cap)
    return _simulate(config, product, settings, out, first, dates, say)


def _simulate(
    config: SimulateConfig,
    product: Config,
    settings: Settings,
    out: Path,
    first: dt.date,
    dates: list[dt.date],
    say: Any,
) -> SimulationResult:
    from recsys.benchmark.synth.generate import generate_data, truth_path_for
    from recsys.benchmark.synth.truth import GroundTruth

    shop = out / "shop"
    summary = generate_data(users=config.users, days=config.history_days, seed=config.seed, out=shop, end_date=first)
    say(summary.format_report())
    truth = GroundTruth.load(truth_path_for(shop))
    catalog = product.catalog
    url = prepare_database(settings, config.database)
    sim_settings = dataclasses.replace(
        settings, database_url=url, data_dir=out / "data", inbox=out / "inbox", inbox_settle_seconds=0
    )
    sim_settings.inbox.mkdir(parents=True, exist_ok=True)
    for f in sorted(shop.glob("*.csv")):
        shutil.copy(f, sim_settings.inbox / f.name)
    say(f"Simulating {config.nights} nights from {first} in the database {config.database!r}")

    runner = None if config.in_process else DagRunner(sim_settings, url, out / "airflow")
    users = SimulatedUsers(truth, config.seed)
    results: list[NightValues] = []
    ledger: CohortLedger | None = None
    budget = {"timesteps": config.timesteps, "seed": config.seed, "shards": config.shards}
    for i, night in enumerate(dates, start=1):
        started = time.perf_counter()
        if runner is None:
            run_night_in_process(sim_settings, night, frequency_cap=config.frequency_cap, **budget)
        else:
            runner.run(night, frequency_cap=config.frequency_cap, **budget)
        with connect(url) as conn:
            if ledger is None:  # night 1: the cohort, before anybody responds to tonight's offers
                ledger = CohortLedger(_cohort(conn, truth, night, product.rules.cap_total), len(dates))
            sent = send_all(conn, night, product, publish_hour_utc=truth.params.publish_hour_utc)
            held = holdout_users(conn, night)
            k = offers_last_7d(conn, night, sent.user_id)
            ok = channel_ok(conn, sent.user_id)
            per_user, fixed = value_users(truth, catalog, night, sent.user_id, sent.action_id, ok, k)
            ledger.record(i - 1, sent.user_id, per_user["policy"], held)
            responses = users.respond(night, sent, k)
            record_responses(conn, responses)
            model_version, mode = night_model(conn, night)
        buys = users.live_day(night, responses)
        written = users.write_events(sim_settings.inbox / f"events_sim_{night.isoformat()}.csv", epoch(night) + DAY)
        revenue = revenue_per_user(buys, sent.user_id, held)
        action = catalog.actions[fixed]
        row = NightValues(
            night=i,
            campaign_date=night,
            treated=len(sent),
            holdout=len(held),
            values={
                **{k2: Interval.of(v) for k2, v in per_user.items()},
                "control": Interval(0.0, 0.0, 0.0, len(held)),
            },
            policy_minus_fixed=Interval.of(per_user["policy"] - per_user["best_fixed"]),
            fixed_action=action.describe(catalog.value_units.get(action.offer_type, "")),
            outcomes={**responses.counts(), "events_written": written},
            revenue_treated=revenue[0],
            revenue_holdout=revenue[1],
            model_version=model_version,
            training_mode=mode,
            seconds=time.perf_counter() - started,
        )
        results.append(row)
        say(format_table([row], header=i == 1))
    value_range = config.value_range().clip(len(dates))
    assert ledger is not None  # at least one night ran (`_check`)
    cohort = reference_values(truth, ledger, dates, value_range, config.seed)
    summary = cohort.summary(value_range)
    action = truth.catalog.actions[cohort.fixed_action]
    summary["fixed_action"] = action.describe(truth.catalog.value_units[action.offer_type])
    summary["fixed_cadence"] = cohort.fixed_cadence
    say(format_cohort_table(cohort, dates, summary, summary["fixed_action"]))
    paths = save_results(results, out, config, cohort=cohort, summary=summary)
    say(f"Saved {', '.join(str(p) for p in paths.values())}")
    return SimulationResult(config, results, paths, cohort, summary)


def _cohort(conn: Any, truth: Any, night: dt.date, cap: int) -> Cohort:
    """The users active on night 1 (features as of the night), where every reference loop starts."""
    from recsys.data.states import load_states

    states = load_states(conn, night)
    order = np.argsort(states.user_ids, kind="stable")
    ids = states.user_ids[order]
    return Cohort(
        user_ids=ids,
        idx=truth.index_of(ids),
        channel_ok=np.asarray(states.channel_ok, dtype=bool)[order],
        prior=offers_by_night(conn, night, ids),
        obs=np.asarray(states.obs, dtype=np.float64)[order],
        cap=int(cap),
    )
