"""The command line: `recsys ...` and `python -m recsys ...` (contract section 4).

Each command parses its arguments, builds the settings, opens the database and calls one stage
function; the stages know nothing about argparse. Errors a user can fix (`RecsysError`) are printed
as one line without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.cli_args import date, non_negative, positive, shard, timestamp
from recsys.config import load_config
from recsys.config.catalog import ALLOWED_CHANNELS
from recsys.errors import RecsysError

if TYPE_CHECKING:
    from recsys.config.settings import Settings
    from recsys.db import Connection

log = logging.getLogger("recsys")


@contextmanager
def _session() -> Iterator[tuple[Settings, Connection]]:
    """The settings and a connection to their database, committed when the command succeeds."""
    from recsys.config.settings import load_settings
    from recsys.db import connect, database_url

    settings = load_settings()
    with connect(database_url(settings)) as conn:
        yield settings, conn


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from recsys.db.migrate import migrate

    with _session() as (settings, conn):
        result = migrate(conn, settings)
    print(result.summary())
    return 0


def cmd_db_retention(args: argparse.Namespace) -> int:
    from recsys.data.retention import apply_retention

    today = args.today or dt.datetime.now(dt.UTC).date()
    with _session() as (settings, conn):
        rules = load_config(settings.config).rules
        print(apply_retention(conn, settings, rules, today).describe())
    return 0


def cmd_generate_data(args: argparse.Namespace) -> int:
    from recsys.benchmark.synth.generate import generate_data

    summary = generate_data(
        users=args.users, days=args.days, seed=args.seed, out=Path(args.out), end_date=args.end_date, world=args.world
    )
    print(summary.format_report())
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from recsys.data.extract import extract_path, load_inbox

    with _session() as (settings, conn):
        if args.inbox:
            results = load_inbox(conn, settings, reference_at=args.reference_time)
        else:
            results = extract_path(
                conn, settings, Path(args.source), reference_at=args.reference_time, force=args.force
            )
    for r in results:
        print(r.describe())
    # Non-zero when something was not loaded that should have been: a refused file, or a named
    # file that changed while it was read. Inbox files still arriving wait for a later run.
    failed = ("refused",) if args.inbox else ("refused", "waiting")
    return 1 if any(r.status in failed for r in results) else 0


def cmd_features(args: argparse.Namespace) -> int:
    from recsys.data.features import backfill_features, build_feature_range

    if args.backfill:
        if args.as_of is not None or args.date_to is not None:
            raise RecsysError("--backfill takes --from DATE at most (the first date to look at)")
        started = time.perf_counter()
        with _session() as (settings, conn):
            results = backfill_features(conn, settings, since=args.date_from)
        for r in results:
            print(r.describe())
        print(f"backfilled {len(results)} feature date(s) in {time.perf_counter() - started:.1f} s")
        return 0
    if args.as_of is not None:
        start = end = args.as_of
    elif args.date_from is not None and args.date_to is not None:
        start, end = args.date_from, args.date_to
        if end < start:
            raise RecsysError(f"--to {end} is before --from {start}")
    else:
        raise RecsysError("give --as-of DATE, or --from DATE --to DATE")
    with _session() as (settings, conn):
        results = build_feature_range(conn, settings, start, end)
    for r in results:
        print(r.describe())
    return 0


def _latest_feature_date(conn: object) -> dt.date:
    from recsys.db import fetch_value

    as_of = fetch_value(conn, "select max(as_of) from recsys.user_features")  # type: ignore[arg-type]
    if as_of is None:
        raise RecsysError("no features have been built: run `recsys features --as-of DATE` first")
    return as_of


def cmd_train(args: argparse.Namespace) -> int:
    from recsys.data.features import build_features
    from recsys.orchestration.train import TrainConfig, train

    names = ("total_timesteps", "seed", "n_envs", "learning_rate", "horizon", "warm_start_steps")
    hyper = TrainConfig(**{n: getattr(args, n) for n in names if getattr(args, n) is not None})
    with _session() as (settings, conn):
        if args.data:
            from recsys.data.extract import extract_path
            from recsys.db.migrate import migrate

            migrate(conn, settings)
            for r in extract_path(conn, settings, Path(args.data)):
                print(r.describe())
                if r.status == "refused":
                    return 1
            if args.as_of is None:
                from recsys.db import fetch_value

                last = fetch_value(conn, "select max(event_at) from recsys.behavior_events")
                if last is None:
                    raise RecsysError(f"{args.data}: no events were loaded, nothing to train on")
                args.as_of = (last + dt.timedelta(days=1)).date()
            print(build_features(conn, settings, args.as_of).describe())
        as_of = args.as_of or _latest_feature_date(conn)
        result = train(
            conn,
            settings,
            config=load_config(settings.config),
            as_of=as_of,
            mode=args.mode,
            train_config=hyper,
            save=Path(args.save) if args.save else None,
            progress_bar=sys.stderr.isatty(),
        )
    print(result.describe())
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from recsys.evaluation.model_eval import evaluate_model

    with _session() as (settings, conn):
        config = load_config(settings.config)
        result = evaluate_model(conn, config, model_version=args.model, as_of=args.as_of)
        if args.truth:
            from recsys.benchmark.truth_eval import evaluate_model_against_truth

            result = evaluate_model_against_truth(conn, config.catalog, result, Path(args.truth))
    print(result.report())
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from recsys.campaign.recommend import recommend

    with _session() as (settings, conn):
        catalog = load_config(settings.config).catalog
        print(recommend(conn, catalog, user_id=args.user_id, model=args.model, as_of=args.as_of).format())
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from recsys.campaign import score_campaign

    if args.shard is not None and not args.run_id:
        raise RecsysError("--shard K/N needs --run-id R (every shard of a run shares its id)")
    k, n = args.shard if args.shard is not None else (None, 1)
    with _session() as (settings, conn):
        summary = score_campaign(
            conn,
            settings,
            args.campaign_date,
            config=load_config(settings.config),
            run_id=args.run_id,
            shard=k,
            shards=n,
            dry_run=args.dry_run,
            model_version=args.model,
        )
    skipped = ", ".join(f"{r} {c}" for r, c in sorted(summary["skipped"].items())) or "none"
    state = "dry run" if args.dry_run else ("published" if "publish" in summary else f"shard {k}/{n} done")
    print(
        f"score {summary['campaign_date']} run {summary['run_id']} (model {summary['model_version']}): "
        f"{summary['offers']} offers, {summary.get('rests', 0)} rests, {summary['holdout']} holdout, "
        f"{summary['exploration']} explored, "
        f"skipped {skipped}; {state} in {summary['timings']['total']:.1f} s"
    )
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from recsys.campaign import publish_run

    with _session() as (settings, conn):
        result = publish_run(conn, settings, args.run_id)
    print(f"publish {result['run_id']}: {result['offers']} offers claimable from {result['published_at']}")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from recsys.config.settings import load_settings
    from recsys.db import database_url
    from recsys.sender import default_worker, run_sender, stop_on_signals
    from recsys.sender.adapters import make_adapter
    from recsys.sender.protocol import ProtocolClient

    settings = load_settings()
    batch = args.batch or settings.sender_batch
    if batch <= 0:
        raise RecsysError(f"RECSYS_SENDER_BATCH: must be > 0, got {batch}")
    adapter = make_adapter(args.adapter, settings, out=Path(args.out) if args.out else None, channel=args.channel)
    worker = args.worker or default_worker()
    try:
        with (
            ProtocolClient(
                database_url(settings), channel=args.channel, worker=worker, lease_seconds=settings.sender_lease_seconds
            ) as client,
            stop_on_signals() as stop,
        ):
            stats = run_sender(
                client, adapter, batch=batch, once=args.once, poll_seconds=settings.sender_poll_seconds, stop=stop
            )
    finally:
        adapter.close()
    print(f"send {args.channel} via {args.adapter} ({worker}): {stats.describe()}", file=sys.stderr)
    return 0


def cmd_ingest_feedback(args: argparse.Namespace) -> int:
    from recsys.data.feedback import ingest_feedback

    with _session() as (settings, conn):
        results = ingest_feedback(conn, settings, Path(args.source), force=args.force)
    for r in results:
        print(r.describe())
    return 1 if any(r.status == "refused" for r in results) else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from recsys.demo import run_demo

    return run_demo(users=args.users, days=args.days, seed=args.seed)


def cmd_simulate(args: argparse.Namespace) -> int:
    from recsys.benchmark.simulate import SimulateConfig, simulate

    config = SimulateConfig(
        nights=args.nights,
        users=args.users,
        seed=args.seed,
        start=args.start,
        out=Path(args.out),
        timesteps=args.timesteps,
        history_days=args.history_days,
        in_process=args.in_process,
        shards=args.shards,
        frequency_cap=args.frequency_cap or None,
        database=args.database,
    )
    simulate(config)
    return 0


def _add_setup_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`demo` and the database administration (`db migrate`, `db retention`)."""
    p = sub.add_parser("demo", help="the main job on a fresh machine: sample data through to a summary")
    p.add_argument("--users", type=positive, default=2000, help="sample users (default 2000)")
    p.add_argument("--days", type=positive, default=60, help="days of behaviour (default 60)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.set_defaults(func=cmd_demo)

    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    p = db_sub.add_parser("migrate", help="apply sql/ migrations once each; re-apply changed views/functions")
    p.set_defaults(func=cmd_db_migrate)
    p = db_sub.add_parser("retention", help="drop behaviour and feature partitions older than the retention windows")
    p.add_argument("--today", type=date, default=None, help="count the windows back from this date (default today)")
    p.set_defaults(func=cmd_db_retention)


def _add_data_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The input data: `generate-data`, `extract`, `features`."""
    p = sub.add_parser("generate-data", help="synthetic behaviour in the input format, plus its hidden truth")
    p.add_argument("--users", type=positive, default=1000, help="number of users (default 1000)")
    p.add_argument("--days", type=positive, default=90, help="days of history (default 90)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--end-date", type=date, default=None, help="events end before this date (default today, UTC)")
    p.add_argument("--out", required=True, help="a .xlsx file, or a folder for CSV files (for more than ~1M rows)")
    p.add_argument(
        "--world",
        choices=("standard", "shifted"),
        default="standard",
        help="the generator's form: the documented model, or one that differs from it on purpose (default standard)",
    )
    p.set_defaults(func=cmd_generate_data)

    p = sub.add_parser("extract", help="validated, idempotent load of input files into PostgreSQL")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", help="an .xlsx or .csv file, or a folder of them")
    src.add_argument(
        "--inbox", action="store_true", help="load new files from the inbox folder and move them to loaded/"
    )
    p.add_argument(
        "--reference-time",
        type=timestamp,
        default=None,
        help="timestamps after this are rejected as in the future (default now)",
    )
    p.add_argument("--force", action="store_true", help="load a file even if its checksum was loaded before")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("features", help="build user features as of a date, or for every date in a range")
    p.add_argument("--as-of", type=date, default=None, help="features from events before this date")
    p.add_argument("--from", dest="date_from", type=date, default=None, help="first date of a range")
    p.add_argument("--to", dest="date_to", type=date, default=None, help="last date of a range (inclusive)")
    p.add_argument(
        "--backfill",
        action="store_true",
        help="rebuild the dates built before the prior-shrunk columns (from --from, default all)",
    )
    p.set_defaults(func=cmd_features)


def _add_model_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The policy: `train`, `evaluate`, `recommend`."""
    p = sub.add_parser("train", help="train PPO (retrain or fine-tune), run the gate, register the model")
    p.add_argument("--data", help="load this file or folder first (extract + features), as in the seed")
    p.add_argument("--save", help="also write the SB3 model zip here (e.g. models/ppo_recommender)")
    p.add_argument("--mode", choices=("auto", "retrain", "fine_tune"), default="auto")
    p.add_argument("--as-of", type=date, default=None, help="train on features as of this date (default latest)")
    p.add_argument("--timesteps", dest="total_timesteps", type=positive, default=None, help="environment steps")
    p.add_argument("--seed", type=int, default=None, help="the one seed (default 0)")
    p.add_argument("--n-envs", dest="n_envs", type=positive, default=None, help="parallel users in the env")
    p.add_argument("--learning-rate", dest="learning_rate", type=float, default=None)
    p.add_argument("--horizon", type=positive, default=None, help="nights per episode")
    p.add_argument(
        "--warm-start-steps",
        dest="warm_start_steps",
        type=non_negative,
        default=None,
        help="retrain: steps imitating the response model's best offer before PPO (0: none)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="the evaluation table: simulator, off-policy estimates, truth where known")
    p.add_argument("--model", default=None, help="a registered model version (default: the champion)")
    p.add_argument("--as-of", type=date, default=None, help="users as of this date (default: latest features)")
    p.add_argument("--truth", default=None, help="the generator's truth file (e.g. data/sample.truth.npz)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("recommend", help="the recommended offer for one user, in the original sample format")
    p.add_argument("--model", default=None, help="an SB3 zip path or a registered model version (default: champion)")
    p.add_argument("--user-id", "--user_id", dest="user_id", type=int, required=True)
    p.add_argument("--as-of", type=date, default=None, help="features as of this date (default: the latest)")
    p.set_defaults(func=cmd_recommend)


def _add_delivery_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Delivery and its outcomes, real or simulated: `send`, `ingest-feedback`, `simulate`."""
    p = sub.add_parser("send", help="reference sender: claim due offers, deliver them, ack or fail each")
    p.add_argument("--channel", required=True, choices=ALLOWED_CHANNELS)
    p.add_argument("--adapter", required=True, choices=("stdout", "jsonl", "smtp", "webhook"))
    p.add_argument("--once", action="store_true", help="drain what is due now and exit (default: keep polling)")
    p.add_argument("--batch", type=positive, default=None, help="offers per claim (default RECSYS_SENDER_BATCH)")
    p.add_argument("--worker", default=None, help="this sender's name in claimed_by (default host:pid)")
    p.add_argument("--out", default=None, help="jsonl adapter: the file to append to (default data/outbox/CH.jsonl)")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("ingest-feedback", help="load offer events (feedback*.csv) into offer_events")
    p.add_argument("--source", required=True, help="a feedback*.csv file, or a folder of them")
    p.add_argument("--force", action="store_true", help="load a file even if its checksum was loaded before")
    p.set_defaults(func=cmd_ingest_feedback)

    p = sub.add_parser("simulate", help="many nights of the nightly run with simulated sender and users")
    p.add_argument("--nights", type=positive, default=7, help="consecutive campaign dates (default 7)")
    p.add_argument("--users", type=positive, default=5000, help="users of the generated shop (default 5000)")
    p.add_argument("--seed", type=int, default=1, help="seed of the shop and the simulated users (default 1)")
    p.add_argument("--start", type=date, default=None, help="first campaign date (default: NIGHTS days ago)")
    p.add_argument("--out", default="data/simulate", help="folder for the shop, inbox and results (data/simulate)")
    p.add_argument("--timesteps", type=positive, default=200_000, help="PPO steps per night (default 200000)")
    p.add_argument("--history-days", type=positive, default=60, help="generated days before the first night")
    p.add_argument("--shards", type=positive, default=1, help="scoring shards per night (default 1)")
    p.add_argument(
        "--database",
        default="recsys_simulate",
        help="the simulation's own database, replaced on the configured server (default recsys_simulate)",
    )
    p.add_argument(
        "--frequency-cap",
        type=int,
        default=7,
        help="offers per user in 7 days for the simulated campaigns (default 7: one a night; 0: the config's rule)",
    )
    p.add_argument("--in-process", action="store_true", help="call the nightly stages directly instead of dag.test()")
    p.set_defaults(func=cmd_simulate)


def _add_campaign_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The nightly campaign: `score`, `publish`."""
    p = sub.add_parser("score", help="score every active user for a campaign date and write the offers")
    p.add_argument("--campaign-date", type=date, required=True, help="the night the offers are for")
    p.add_argument("--run-id", default=None, help="run id (default cli-DATE-STAMP); required with --shard")
    p.add_argument("--shard", type=shard, default=None, help="score shard K of N only (K/N); publish later")
    p.add_argument("--model", default=None, help="a registered model version (default: the date's, else champion)")
    p.add_argument("--dry-run", action="store_true", help="score and count, write no offers")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("publish", help="make a sharded run's offers claimable once every shard is done")
    p.add_argument("--run-id", required=True)
    p.set_defaults(func=cmd_publish)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys",
        description="Reinforcement-learning offer engine: nightly campaigns on PostgreSQL.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_setup_commands(sub)
    _add_data_commands(sub)
    _add_model_commands(sub)
    _add_delivery_commands(sub)
    _add_campaign_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The embedded server's start-up chatter is not news to a user; its warnings are.
    logging.getLogger("pgserver").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except RecsysError as e:
        print(f"recsys {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"recsys {args.command}: interrupted", file=sys.stderr)
        return 130
