"""Synthetic shop data in the input-file format, with its hidden ground truth written beside it.

`generate_data` draws users with latent traits (`recsys.benchmark.synth.truth`), simulates their organic
shopping sessions over `days` days (`recsys.benchmark.synth.sessions`), replays a nightly campaign with a
documented randomised logging policy whose outcomes come from the truth's response model
(`recsys.benchmark.synth.campaigns`; the whole run: `recsys.benchmark.synth.world.simulate`), and writes
the `events`, `users` and `offers` tables (CONTRACT.md section 1) as one .xlsx workbook or a folder of
CSV files (`recsys.benchmark.synth.writers`). The truth goes to `truth_path_for(out)`. Called by
`recsys generate-data`, the demo and the benchmarks.

The window is the `days` days before `end_date` (default: today, UTC); everything happens in
[end_date - days, end_date) UTC. Every constant is a field of `SynthParams`.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

from recsys.benchmark.synth.campaigns import truncated_exponential
from recsys.benchmark.synth.params import WORLDS, SynthParams
from recsys.benchmark.synth.sessions import (
    ACTIONS,
    CLICKED,
    CONVERTED,
    SESSION_CHANNELS,
    Sessions,
    organic_sessions,
    session_events,
)
from recsys.benchmark.synth.truth import PersonalisationReport
from recsys.benchmark.synth.world import GENERATOR_VERSION, World, simulate
from recsys.benchmark.synth.writers import (
    EVENT_COLUMNS,
    OFFER_COLUMNS,
    USER_COLUMNS,
    write_events_csv,
    write_offers_csv,
    write_users_csv,
    write_workbook,
)
from recsys.config.catalog import Catalog, load_catalog
from recsys.errors import GenerateError

XLSX_MAX_ROWS = 1_048_575

__all__ = [
    "ACTIONS",
    "EVENT_COLUMNS",
    "GENERATOR_VERSION",
    "OFFER_COLUMNS",
    "SESSION_CHANNELS",
    "USER_COLUMNS",
    "XLSX_MAX_ROWS",
    "GenerateSummary",
    "World",
    "generate_data",
    "simulate",
    "truth_path_for",
]

# The session model under the names `recsys.benchmark.simulate` imports from here.
_Sessions = Sessions
_organic_sessions = organic_sessions
_expand = session_events
_truncated_exponential = truncated_exponential
_CONVERTED, _CLICKED = CONVERTED, CLICKED


@dataclass(frozen=True)
class GenerateSummary:
    """What `generate_data` wrote, and how much personalisation is worth in it."""

    users: int
    days: int
    seed: int
    end_date: dt.date
    format: str
    counts: dict[str, int]
    """Data rows per sheet: events, users, offers."""
    paths: dict[str, Path]
    """Where each sheet went (the same workbook for all three with .xlsx)."""
    truth_path: Path
    report: PersonalisationReport
    seconds: float

    def format_report(self) -> str:
        """A few lines for the command line."""
        r = self.report
        first = self.end_date - dt.timedelta(days=self.days)
        where = sorted({str(p) for p in self.paths.values()})
        lines = [
            f"Generated {self.users:,} users over {self.days} days ({first} to {self.end_date - dt.timedelta(days=1)}, "
            f"seed {self.seed}) in {self.seconds:.1f} s:",
            f"  events {self.counts['events']:,}, users {self.counts['users']:,}, offers {self.counts['offers']:,}",
            f"  written to {', '.join(where)}",
            f"  ground truth: {self.truth_path}",
            f"Personalisation under the truth (mean value per user and night, {r.n_users:,} users):",
        ]
        for label, c in (("consented channels", r.with_consent), ("all channels", r.ignoring_consent)):
            lines.append(
                f"  {label}: per-user best {c.oracle_mean:.4f}, best fixed offer {c.fixed_mean:.4f} "
                f"({c.ratio:.0%} of the best; {c.fixed_action})"
            )
        return "\n".join(lines)


def truth_path_for(out: Path) -> Path:
    """Where the ground truth of `out` goes: data/sample.xlsx -> data/sample.truth.npz,
    data/big/ -> data/big.truth.npz."""
    out = Path(out)
    if out.suffix.lower() == ".xlsx":
        return out.with_suffix(".truth.npz")
    return out.parent / f"{out.name}.truth.npz"


def _resolve_format(out: Path, fmt: str | None) -> str:
    is_xlsx = out.suffix.lower() == ".xlsx"
    if fmt is None:
        if out.suffix.lower() == ".csv":
            raise GenerateError(
                f"--out {out}: CSV output is a folder of events.csv, users.csv and offers.csv; "
                f"give a folder, e.g. --out {out.with_suffix('')}/"
            )
        return "xlsx" if is_xlsx else "csv"
    fmt = fmt.lower()
    if fmt not in ("xlsx", "csv"):
        raise GenerateError(f"unknown output format {fmt!r}: use 'xlsx' or 'csv'")
    if fmt == "xlsx" and not is_xlsx:
        raise GenerateError(f"--out {out}: an .xlsx workbook needs a path ending in .xlsx")
    if fmt == "csv" and is_xlsx:
        raise GenerateError(f"--out {out}: CSV output is a folder, not a path ending in .xlsx")
    return fmt


def _check_xlsx_rows(counts: dict[str, int], out: Path) -> None:
    for sheet, n in counts.items():
        if n > XLSX_MAX_ROWS:
            raise GenerateError(
                f"{n:,} {sheet} exceed the {XLSX_MAX_ROWS:,} rows an .xlsx sheet holds; "
                f"write CSV instead: --out {out.with_suffix('')}/"
            )


def _check_request(*, users: int, days: int, seed: int, out: Path, fmt: str | None) -> str:
    """The output format, once the arguments are known to be usable (else a GenerateError)."""
    for name, value, low in (("users", users, 1), ("days", days, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise GenerateError(f"--{name} must be an integer >= {low}, got {value!r}")
    fmt = _resolve_format(out, fmt)
    if fmt == "xlsx":
        _check_xlsx_rows({"users": users}, out)
    if out.exists() and fmt == "csv" and not out.is_dir():
        raise GenerateError(f"--out {out}: exists and is not a folder")
    if out.exists() and fmt == "xlsx" and out.is_dir():
        raise GenerateError(f"--out {out}: is a folder, not a workbook path")
    return fmt


def _write_files(world: World, out: Path, fmt: str, end_date: dt.date) -> dict[str, Path]:
    """Write the tables and the truth; returns where each table went.

    Everything goes to hidden temporary files first and is renamed into place at the end, so a
    failure leaves no half-written file behind.
    """
    catalog = world.truth.catalog
    truth_path = truth_path_for(out)
    if fmt == "xlsx":
        paths = {"events": out, "users": out, "offers": out}
        targets = {out: out.with_name(f".{out.name}.tmp")}
    else:
        paths = {name: out / f"{name}.csv" for name in ("events", "users", "offers")}
        targets = {path: path.with_name(f".{path.name}.tmp") for path in paths.values()}
    targets[truth_path] = truth_path.with_name(f".{truth_path.name}.tmp")
    made_folder = fmt == "csv" and not out.exists()
    try:
        (out if fmt == "csv" else out.parent).mkdir(parents=True, exist_ok=True)
        if fmt == "xlsx":
            write_workbook(world, catalog, targets[out], end_date)
        else:
            write_events_csv(world, targets[paths["events"]])
            write_users_csv(world, targets[paths["users"]])
            write_offers_csv(world, catalog, targets[paths["offers"]])
        world.truth.save(targets[truth_path])
        for final, tmp in targets.items():
            tmp.replace(final)
    except BaseException:
        for tmp in targets.values():
            tmp.unlink(missing_ok=True)
        if made_folder and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return paths


def generate_data(
    *,
    users: int,
    days: int,
    seed: int,
    out: Path,
    end_date: dt.date | None = None,
    fmt: str | None = None,
    catalog: Catalog | None = None,
    world: str = "standard",
    session_hour_decoupled_share: float = 0.0,
) -> GenerateSummary:
    """Generate `users` users over the `days` days before `end_date` and write them to `out`.

    `out` ending in .xlsx gives one workbook (sheets events, users, offers); anything else a folder
    with events.csv, users.csv and offers.csv. The ground truth goes to `truth_path_for(out)`. The
    same arguments always give byte-identical files. Nothing is written when the request cannot be
    met (for instance more rows than an .xlsx sheet holds). `catalog` is the offers the simulated
    shop sent in the past (default: the packaged seed catalog). `world` is the generator's form
    (`recsys.benchmark.synth.params.WORLDS`; `shifted` differs from the documented model on purpose).
    `session_hour_decoupled_share` weakens the link between session and reading hours
    (`SynthParams.session_hour_decoupled_share`).
    """
    started = time.perf_counter()
    if world not in WORLDS:
        raise GenerateError(f"world must be one of {', '.join(WORLDS)}, got {world!r}")
    if not 0.0 <= session_hour_decoupled_share <= 1.0:
        raise GenerateError(f"session_hour_decoupled_share must be in [0, 1], got {session_hour_decoupled_share}")
    params = SynthParams(world=world, session_hour_decoupled_share=session_hour_decoupled_share)
    out = Path(out)
    fmt = _check_request(users=users, days=days, seed=seed, out=out, fmt=fmt)
    if end_date is None:
        end_date = dt.datetime.now(dt.UTC).date()

    # the simulated shop's past holds offers only: its truth knows no rest
    catalog = (catalog or load_catalog()).without_rest()
    world_data = simulate(users=users, days=days, seed=seed, end_date=end_date, catalog=catalog, params=params)
    counts = {"events": world_data.n_events, "users": users, "offers": world_data.n_offers}
    if fmt == "xlsx":
        _check_xlsx_rows(counts, out)
    paths = _write_files(world_data, out, fmt, end_date)
    report = world_data.truth.personalisation_report()
    return GenerateSummary(
        users=users,
        days=days,
        seed=seed,
        end_date=end_date,
        format=fmt,
        counts=counts,
        paths=paths,
        truth_path=truth_path_for(out),
        report=report,
        seconds=time.perf_counter() - started,
    )
