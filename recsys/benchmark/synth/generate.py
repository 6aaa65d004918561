"""Synthetic shop data in the input-file format, with its hidden ground truth written beside it.

`generate_data` draws users with latent traits (`recsys.benchmark.synth.truth`), simulates their organic
shopping sessions over `days` days, replays a nightly campaign with a documented randomised logging
policy whose outcomes come from the truth's response model, and writes the `events`, `users` and
`offers` tables (CONTRACT.md section 1) as one .xlsx workbook or a folder of CSV files. The truth
goes to `truth_path_for(out)`. Called by `recsys generate-data`, the demo and the benchmarks.

Simulation (constants in `SynthParams`)
---------------------------------------
- Window: the `days` days before `end_date` (default: today, UTC); everything happens in
  [end_date - days, end_date) UTC.
- Organic sessions: Poisson(activity rate x days) per user, each on a uniform day, starting at a
  local hour ~ N(preferred hour, 2.5^2) wrapped to the day. A session has 1 + Poisson(2.6) views
  (categories drawn from the user's affinities), each view turns into an add-to-cart with
  probability 0.12 (of one of the session's viewed categories), and a session with a cart ends in a
  purchase with probability 0.4 (the last cart's category, an order value drawn from the user's
  basket; discount and free-shipping flags with probabilities rising with the traits). Events are
  spaced by exponential gaps of mean 50 s. What brought the session: see
  `GroundTruth.session_channel_probabilities`.
- Campaigns, one per night d in the window: each user who consents to at least one catalog channel
  gets an offer with probability 0.15. The action is drawn from the logging policy
      pi(a | user, d) = 0.5 / |allowed| + 0.5 * [a == rule(user, d)]
  where `allowed` = every catalog action on a channel the user consents to at that moment, and
  `rule` = (recommendation if the user purchased in the 30 days before d 00:00 UTC else discount,
  the middle catalog value, the first consented channel in the order email, push, sms, the first
  catalog timing). The `propensity` column is exactly pi of the action sent.
- An offer is sent at release + the timing's delay, release = max(09:00 local on d, 01:00 UTC on d).
  Opened / clicked / unsubscribed / converted are drawn from `GroundTruth.response` with k = offers
  the user got in the 7 nights before d. Opens come after an exponential delay (mean 45 min), clicks
  3 min after the open, purchases 12 min after the click, all truncated to the attribution window
  (24 h) and the data window. An unsubscribe revokes the channel's consent at the open (the user row's
  `updated_at` moves there). A click starts a session brought by the offer's channel whose first view
  is the offer's category (the favourite category for recommendation and bundle offers); a
  conversion ends it with the purchase whose amount is the offer's `revenue` and whose
  `discount_used` / `free_shipping_used` say which offer was used.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recsys.benchmark.synth import _write as w
from recsys.benchmark.synth.clock import DAY, HOUR, epoch_seconds, release_seconds, utc_offsets
from recsys.benchmark.synth.params import CATEGORIES, CHANNELS, FIRST_NAMES, TIMEZONES, SynthParams
from recsys.benchmark.synth.truth import TRUTH_FORMAT, GroundTruth, PersonalisationReport, catalog_meta, sample_traits
from recsys.config.catalog import Catalog, load_catalog
from recsys.errors import GenerateError

GENERATOR_VERSION = "1.0"
XLSX_MAX_ROWS = 1_048_575

EVENT_COLUMNS = (
    "event_id",
    "user_id",
    "session_id",
    "timestamp",
    "action",
    "product_category",
    "channel",
    "amount",
    "discount_used",
    "free_shipping_used",
)
USER_COLUMNS = (
    "user_id",
    "email_opt_in",
    "sms_opt_in",
    "push_opt_in",
    "email",
    "phone",
    "push_token",
    "timezone",
    "first_name",
    "updated_at",
)
OFFER_COLUMNS = (
    "offer_id",
    "user_id",
    "sent_at",
    "offer_type",
    "offer_value",
    "channel",
    "timing",
    "propensity",
    "opened",
    "clicked",
    "converted",
    "revenue",
)
ACTIONS = ("view", "add_to_cart", "purchase")
SESSION_CHANNELS = ("web", "app", "email", "sms", "push")

# Session kinds: organic, an offer click that converts, an offer click that does not.
_ORGANIC, _CONVERTED, _CLICKED = 0, 1, 2
_MAX_VIEWS = 40


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


def generate_data(
    *,
    users: int,
    days: int,
    seed: int,
    out: Path,
    end_date: dt.date | None = None,
    fmt: str | None = None,
) -> GenerateSummary:
    """Generate `users` users over the `days` days before `end_date` and write them to `out`.

    `out` ending in .xlsx gives one workbook (sheets events, users, offers); anything else a folder
    with events.csv, users.csv and offers.csv. The ground truth goes to `truth_path_for(out)`. The
    same arguments always give byte-identical files. Nothing is written when the request cannot be
    met (for instance more rows than an .xlsx sheet holds).
    """
    started = time.perf_counter()
    for name, value, low in (("users", users, 1), ("days", days, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise GenerateError(f"--{name} must be an integer >= {low}, got {value!r}")
    out = Path(out)
    fmt = _resolve_format(out, fmt)
    if end_date is None:
        end_date = dt.datetime.now(dt.UTC).date()
    if fmt == "xlsx":
        _check_xlsx_rows({"users": users}, out)
    if out.exists() and fmt == "csv" and not out.is_dir():
        raise GenerateError(f"--out {out}: exists and is not a folder")
    if out.exists() and fmt == "xlsx" and out.is_dir():
        raise GenerateError(f"--out {out}: is a folder, not a workbook path")

    catalog = load_catalog()
    world = simulate(users=users, days=days, seed=seed, end_date=end_date, catalog=catalog)
    counts = {"events": world.n_events, "users": users, "offers": world.n_offers}
    if fmt == "xlsx":
        _check_xlsx_rows(counts, out)

    # Everything goes to hidden temporary files first and is renamed into place at the end, so a
    # failure leaves no half-written file behind.
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
            _write_workbook(world, catalog, targets[out], end_date)
        else:
            _write_events_csv(world, targets[paths["events"]])
            _write_users_csv(world, targets[paths["users"]])
            _write_offers_csv(world, catalog, targets[paths["offers"]])
        world.truth.save(targets[truth_path])
        for final, tmp in targets.items():
            tmp.replace(final)
    except BaseException:
        for tmp in targets.values():
            tmp.unlink(missing_ok=True)
        if made_folder and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    report = world.truth.personalisation_report()
    return GenerateSummary(
        users=users,
        days=days,
        seed=seed,
        end_date=end_date,
        format=fmt,
        counts=counts,
        paths=paths,
        truth_path=truth_path,
        report=report,
        seconds=time.perf_counter() - started,
    )


# --- the simulation --------------------------------------------------------------------------------


@dataclass
class World:
    """Every generated table as numpy columns (internal codes), plus the truth."""

    truth: GroundTruth
    window_start: int
    end: int
    # users
    user_id: np.ndarray
    consent: np.ndarray
    has_address: np.ndarray
    first_name: np.ndarray
    push_token: np.ndarray
    updated_at: np.ndarray
    # events, in output order
    ev_user: np.ndarray
    ev_session: np.ndarray
    ev_time: np.ndarray
    ev_action: np.ndarray
    ev_category: np.ndarray
    ev_channel: np.ndarray
    ev_amount_cents: np.ndarray
    ev_discount: np.ndarray
    ev_free_shipping: np.ndarray
    # offers, in output order
    of_user: np.ndarray
    of_sent_at: np.ndarray
    of_action: np.ndarray
    of_propensity: np.ndarray
    of_opened: np.ndarray
    of_clicked: np.ndarray
    of_converted: np.ndarray
    of_revenue_cents: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        return len(self.ev_user)

    @property
    def n_offers(self) -> int:
        return len(self.of_user)


@dataclass
class _Sessions:
    """Sessions before expansion into events (parallel arrays)."""

    user: np.ndarray
    start: np.ndarray
    channel: np.ndarray
    kind: np.ndarray
    first_category: np.ndarray
    end: np.ndarray
    amount_cents: np.ndarray
    discount: np.ndarray
    free_shipping: np.ndarray

    @classmethod
    def concat(cls, parts: list[_Sessions]) -> _Sessions:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)})


def _truncated_exponential(rng: np.random.Generator, mean: float, upper: np.ndarray) -> np.ndarray:
    """Exponential(mean) draws conditioned on being below `upper` (inverse CDF, exact)."""
    u = rng.random(len(upper))
    return -mean * np.log1p(-u * (-np.expm1(-upper / mean)))


def simulate(
    *,
    users: int,
    days: int,
    seed: int,
    end_date: dt.date,
    catalog: Catalog,
    params: SynthParams | None = None,
) -> World:
    """Draw the users and simulate their sessions and the past campaigns (see the module docstring)."""
    p = params or SynthParams()
    # One independent stream per component, so that a change in one leaves the others' draws alone.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    rng_traits, rng_profile, rng_organic, rng_campaign, rng_offer_events = streams
    n = users
    end = epoch_seconds(end_date)
    window_start = end - days * DAY
    first_date = end_date - dt.timedelta(days=days)

    traits, consent0 = sample_traits(rng_traits, n, p)
    tz_weights = np.asarray(p.timezone_weights) / sum(p.timezone_weights)
    tz = rng_profile.choice(len(TIMEZONES), size=n, p=tz_weights).astype(np.int8)
    first_name = rng_profile.integers(0, len(FIRST_NAMES), size=n)
    has_address = consent0 | (rng_profile.random((n, 3)) < np.asarray(p.address_without_consent))
    push_token = rng_profile.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)
    updated_at = window_start - (rng_profile.random(n) * p.profile_age_days * DAY).astype(np.int64) - 1
    user_id = np.arange(1, n + 1, dtype=np.int64)
    offsets = utc_offsets(TIMEZONES, first_date, days)

    meta = {
        "format": TRUTH_FORMAT,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "users": users,
        "days": days,
        "end_date": end_date.isoformat(),
        "catalog_fingerprint": catalog.fingerprint(),
        "catalog": catalog_meta(catalog),
        "timezones": list(TIMEZONES),
        "categories": list(CATEGORIES),
        "channels": list(CHANNELS),
    }
    consent = consent0.copy()
    truth = GroundTruth(
        user_ids=user_id, traits=traits, consent=consent, timezone=tz, catalog=catalog, params=p, meta=meta
    )

    organic = _organic_sessions(rng_organic, truth, consent0, tz, offsets, window_start, days)
    org_events = _expand(rng_organic, truth, organic, end)

    purchases = org_events["action"] == 2
    buy_time = org_events["time"][purchases]
    buy_user = organic.user[org_events["session"][purchases]]
    order = np.argsort(buy_time, kind="stable")
    buy_time, buy_user = buy_time[order], buy_user[order]

    offers, offer_sessions = _campaigns(
        rng_campaign, truth, consent, tz, offsets, window_start, end, days, first_date, buy_time, buy_user, updated_at
    )
    off_events = _expand(rng_offer_events, truth, offer_sessions, end)

    # Sessions in order of start (then user), events grouped by session in that order.
    sessions = _Sessions.concat([organic, offer_sessions])
    n_org = len(organic.user)
    events = {k: np.concatenate([org_events[k], off_events[k]]) for k in org_events}
    events["session"][len(org_events["session"]) :] += n_org
    del org_events, off_events
    session_order = np.lexsort((sessions.user, sessions.start))
    n_ev = np.bincount(events["session"], minlength=len(sessions.user))
    ev_first = np.cumsum(n_ev) - n_ev
    lens = n_ev[session_order]
    new_first = np.cumsum(lens) - lens
    take = np.repeat(ev_first[session_order] - new_first, lens) + np.arange(int(lens.sum()))
    session_number = np.empty(len(session_order), dtype=np.int64)
    session_number[session_order] = np.arange(1, len(session_order) + 1)
    ev_session_old = events.pop("session")[take]

    truth.consent = consent
    return World(
        truth=truth,
        window_start=window_start,
        end=end,
        user_id=user_id,
        consent=consent,
        has_address=has_address,
        first_name=first_name,
        push_token=push_token,
        updated_at=updated_at,
        ev_user=sessions.user[ev_session_old] + 1,
        ev_session=session_number[ev_session_old],
        ev_time=events.pop("time")[take],
        ev_action=events.pop("action")[take],
        ev_category=events.pop("category")[take],
        ev_channel=sessions.channel[ev_session_old],
        ev_amount_cents=events.pop("amount_cents")[take],
        ev_discount=events.pop("discount")[take],
        ev_free_shipping=events.pop("free_shipping")[take],
        of_user=offers["user"] + 1,
        of_sent_at=offers["sent_at"],
        of_action=offers["action"],
        of_propensity=offers["propensity"],
        of_opened=offers["opened"],
        of_clicked=offers["clicked"],
        of_converted=offers["converted"],
        of_revenue_cents=offers["revenue_cents"],
        meta=meta,
    )


def _organic_sessions(
    rng: np.random.Generator,
    truth: GroundTruth,
    consent: np.ndarray,
    tz: np.ndarray,
    offsets: np.ndarray,
    window_start: int,
    days: int,
) -> _Sessions:
    """Organic sessions of every user over the window (see the module docstring)."""
    p = truth.params
    count = rng.poisson(truth.session_rate() * days)
    user = np.repeat(np.arange(len(count)), count)
    m = len(user)
    day = rng.integers(0, days, size=m)
    local_hour = np.mod(truth.session_hour()[user] + rng.normal(0.0, p.session_hour_sd, size=m), 24.0)
    local_sec = (local_hour * HOUR).astype(np.int64)
    # The session's local time of day, placed on UTC day `day` (so it stays inside the window).
    sec_of_day = np.mod(local_sec - offsets[tz[user], day], DAY)
    start = window_start + day * DAY + sec_of_day
    probs = truth.session_channel_probabilities(consent)[user]
    channel = (rng.random(m)[:, None] > np.cumsum(probs, axis=1)[:, :-1]).sum(axis=1).astype(np.int8)
    return _Sessions(
        user=user,
        start=start,
        channel=channel,
        kind=np.full(m, _ORGANIC, dtype=np.int8),
        first_category=np.full(m, -1, dtype=np.int8),
        end=np.zeros(m, dtype=np.int64),
        amount_cents=np.full(m, -1, dtype=np.int64),
        discount=np.full(m, -1, dtype=np.int8),
        free_shipping=np.full(m, -1, dtype=np.int8),
    )


def _draw_categories(rng: np.random.Generator, cdf: np.ndarray, users: np.ndarray) -> np.ndarray:
    out = np.empty(len(users), dtype=np.int8)
    step = 1_000_000
    for lo in range(0, len(users), step):
        u = users[lo : lo + step]
        r = rng.random(len(u))
        out[lo : lo + step] = np.minimum((r[:, None] > cdf[u]).sum(axis=1), cdf.shape[1] - 1)
    return out


def _expand(rng: np.random.Generator, truth: GroundTruth, s: _Sessions, end: int) -> dict[str, np.ndarray]:
    """Events of the sessions: views, add-to-carts, a purchase; grouped by session, in time order."""
    p = truth.params
    n = len(s.user)
    views = np.minimum(1 + rng.poisson(p.extra_views_mean, size=n), _MAX_VIEWS)
    carts = rng.binomial(views, p.cart_per_view)
    converted = s.kind == _CONVERTED
    carts = np.where(converted, np.maximum(carts, 1), carts)
    buys = converted | ((s.kind == _ORGANIC) & (carts > 0) & (rng.random(n) < p.purchase_given_cart))
    n_ev = views + carts + buys
    first = np.cumsum(n_ev) - n_ev
    total = int(n_ev.sum())
    session = np.repeat(np.arange(n), n_ev)
    pos = np.arange(total) - first[session]
    nv = views[session]
    action = np.where(pos < nv, 0, np.where(pos < nv + carts[session], 1, 2)).astype(np.int8)

    user = s.user[session]
    category = _draw_categories(rng, truth.category_cdf(), user)
    forced = s.first_category[session]
    category = np.where((pos == 0) & (forced >= 0), forced, category)
    is_cart = action == 1
    pick = first[session[is_cart]] + (rng.random(int(is_cart.sum())) * nv[is_cart]).astype(np.int64)
    cart_cat = category[pick]
    cart_forced = forced[is_cart]
    category[is_cart] = np.where(cart_forced >= 0, cart_forced, cart_cat)
    is_buy = action == 2
    category[is_buy] = category[np.flatnonzero(is_buy) - 1]

    gap = rng.exponential(p.event_gap_seconds, size=total)
    gap[pos == 0] = 0.0
    cum = np.cumsum(gap)
    offset = cum - cum[first][session]
    last = offset[first + n_ev - 1]
    conv_span = (s.end - s.start).astype(np.float64)
    room = (end - 1 - s.start).astype(np.float64)
    scale = np.where(
        converted, conv_span / np.maximum(last, 1e-9), np.where(last > room, room / np.maximum(last, 1e-9), 1.0)
    )
    when = s.start[session] + np.floor(offset * scale[session]).astype(np.int64)
    when = np.where(is_buy & converted[session], s.end[session], when)

    amount = np.full(total, -1, dtype=np.int64)
    discount = np.full(total, -1, dtype=np.int8)
    free_ship = np.full(total, -1, dtype=np.int8)
    buy_idx = np.flatnonzero(is_buy)
    buy_sess = session[buy_idx]
    organic_buy = ~converted[buy_sess]
    org_users = s.user[buy_sess[organic_buy]]
    organic_amount = np.round(truth.sample_order(rng, org_users) * 100).astype(np.int64)
    p_disc, p_fs = truth.organic_flag_probabilities()
    org_disc = (rng.random(len(org_users)) < p_disc[org_users]).astype(np.int8)
    org_fs = (rng.random(len(org_users)) < p_fs[org_users]).astype(np.int8)
    amount[buy_idx] = s.amount_cents[buy_sess]
    discount[buy_idx] = s.discount[buy_sess]
    free_ship[buy_idx] = s.free_shipping[buy_sess]
    amount[buy_idx[organic_buy]] = organic_amount
    discount[buy_idx[organic_buy]] = org_disc
    free_ship[buy_idx[organic_buy]] = org_fs
    return {
        "session": session,
        "time": when,
        "action": action,
        "category": category,
        "amount_cents": amount,
        "discount": discount,
        "free_shipping": free_ship,
    }


def _campaigns(
    rng: np.random.Generator,
    truth: GroundTruth,
    consent: np.ndarray,
    tz: np.ndarray,
    offsets: np.ndarray,
    window_start: int,
    end: int,
    days: int,
    first_date: dt.date,
    buy_time: np.ndarray,
    buy_user: np.ndarray,
    updated_at: np.ndarray,
) -> tuple[dict[str, np.ndarray], _Sessions]:
    """Replay one campaign per night with the logging policy; updates `consent` and `updated_at`."""
    p = truth.params
    cat = truth.catalog
    n = len(tz)
    n_types, n_values = len(cat.offer_types), len(cat.values)
    n_channels, n_timings = len(cat.channels), len(cat.timings)
    channel_cols = np.array([CHANNELS.index(c) for c in cat.channels])
    order = [cat.channels.index(c) for c in p.rule_channel_order if c in cat.channels]
    order += [i for i in range(n_channels) if i not in order]
    types = cat.offer_types
    recent_type = types.index(p.rule_recent_buyer_offer) if p.rule_recent_buyer_offer in types else 0
    other_type = types.index(p.rule_other_offer) if p.rule_other_offer in types else 0
    rule_value = n_values // 2
    per_channel = n_types * n_values * n_timings
    top_category = truth.top_category()
    delay_sec = (truth.action_delay_hours * HOUR).astype(np.int64)

    last_buy = np.full(n, np.iinfo(np.int64).min // 2, dtype=np.int64)
    pending_time = np.zeros(0, dtype=np.int64)
    pending_user = np.zeros(0, dtype=np.int64)
    recent_counts = np.zeros(n, dtype=np.int16)
    history: deque[np.ndarray] = deque()
    rows: list[dict[str, np.ndarray]] = []
    sessions: list[_Sessions] = []
    buy_ptr = 0

    for j in range(days):
        night = first_date + dt.timedelta(days=j)
        night_start = window_start + j * DAY
        # What the rule knows: purchases before the night's 00:00 UTC.
        stop = int(np.searchsorted(buy_time, night_start, side="left"))
        np.maximum.at(last_buy, buy_user[buy_ptr:stop], buy_time[buy_ptr:stop])
        buy_ptr = stop
        due = pending_time < night_start
        np.maximum.at(last_buy, pending_user[due], pending_time[due])
        pending_time, pending_user = pending_time[~due], pending_user[~due]

        allowed_all = consent[:, channel_cols]
        eligible = allowed_all.any(axis=1)
        sent = eligible & (rng.random(n) < p.send_share)
        idx = np.flatnonzero(sent)
        m = len(idx)
        allowed = allowed_all[idx]
        n_allowed = allowed.sum(axis=1)

        recent = last_buy[idx] >= night_start - p.recent_buyer_days * DAY
        rule_type = np.where(recent, recent_type, other_type)
        rule_channel = np.full(m, -1, dtype=np.int64)
        for c in reversed(order):
            rule_channel = np.where(allowed[:, c], c, rule_channel)
        rule_action = ((rule_type * n_values + rule_value) * n_channels + rule_channel) * n_timings + 0

        uniform = rng.random(m) < p.uniform_share
        r = (rng.random(m) * n_allowed).astype(np.int64)
        u_channel = (np.cumsum(allowed, axis=1) > r[:, None]).argmax(axis=1)
        u_type = rng.integers(0, n_types, size=m)
        u_value = rng.integers(0, n_values, size=m)
        u_timing = rng.integers(0, n_timings, size=m)
        u_action = ((u_type * n_values + u_value) * n_channels + u_channel) * n_timings + u_timing
        action = np.where(uniform, u_action, rule_action)
        propensity = p.uniform_share / (per_channel * n_allowed) + (1.0 - p.uniform_share) * (action == rule_action)

        offset = offsets[tz[idx], j]
        release = release_seconds(offset, night_start, p.release_hour_local, p.publish_hour_utc)
        release_hour = np.zeros(n)
        release_hour[idx] = (release - night_start + offset) / HOUR
        k = recent_counts[idx]
        resp = truth.response(idx, action, night=night, offers_last_7d=k, release_hour=release_hour)
        sent_at = release + delay_sec[action]

        opened = rng.random(m) < resp.p_open
        u = rng.random(m)
        clicked = opened & (u < resp.p_click)
        unsubscribed = opened & (u >= 1.0 - resp.p_unsubscribe) & ~clicked
        converted = clicked & (rng.random(m) < resp.p_convert)

        window = np.minimum(p.response_horizon_hours * HOUR, end - 1 - sent_at).astype(np.float64)
        open_at = sent_at + _truncated_exponential(rng, p.open_delay_mean_minutes * 60, 0.5 * window).astype(np.int64)
        click_at = open_at + _truncated_exponential(rng, p.click_delay_mean_minutes * 60, 0.1 * window).astype(np.int64)
        buy_at = click_at + _truncated_exponential(rng, p.purchase_delay_mean_minutes * 60, 0.2 * window).astype(
            np.int64
        )

        # An unsubscribe revokes that channel from the open on.
        un = idx[unsubscribed]
        consent[un, channel_cols[truth.action_channel[action[unsubscribed]]]] = False
        updated_at[un] = open_at[unsubscribed]

        revenue = np.zeros(m, dtype=np.int64)
        conv_idx = idx[converted]
        conv_action = action[converted]
        paid = truth.sample_order(rng, conv_idx, conv_action)
        revenue[converted] = np.round(paid * 100).astype(np.int64)
        pending_time = np.concatenate([pending_time, buy_at[converted]])
        pending_user = np.concatenate([pending_user, conv_idx])

        typ = truth.action_type[action[clicked]]
        c_users = idx[clicked]
        sessions.append(
            _Sessions(
                user=c_users,
                start=click_at[clicked],
                channel=(2 + truth.action_channel[action[clicked]]).astype(np.int8),
                kind=np.where(converted[clicked], _CONVERTED, _CLICKED).astype(np.int8),
                first_category=np.where(typ >= 2, top_category[c_users], -1).astype(np.int8),
                end=buy_at[clicked],
                amount_cents=revenue[clicked],
                discount=np.where(converted[clicked], (typ == 0) | (typ == 3), -1).astype(np.int8),
                free_shipping=np.where(converted[clicked], typ == 1, -1).astype(np.int8),
            )
        )
        rows.append(
            {
                "user": idx,
                "sent_at": sent_at,
                "action": action,
                "propensity": propensity,
                "opened": opened,
                "clicked": clicked,
                "converted": converted,
                "revenue_cents": revenue,
            }
        )
        recent_counts[idx] += 1
        history.append(idx)
        if len(history) > 7:
            recent_counts[history.popleft()] -= 1

    offers = {key: np.concatenate([r[key] for r in rows]) for key in rows[0]}
    return offers, _Sessions.concat(sessions)


# --- writing ---------------------------------------------------------------------------------------


def _value_labels(catalog: Catalog) -> list[str]:
    return [f"{v:g}" for v in catalog.values]


def _write_events_csv(world: World, path: Path) -> None:
    def fields(lo: int, hi: int) -> list[np.ndarray]:
        sl = slice(lo, hi)
        return [
            w.prefixed("e", np.arange(lo + 1, hi + 1)),
            w.digits(world.ev_user[sl]),
            w.prefixed("s", world.ev_session[sl]),
            w.timestamps(world.ev_time[sl]),
            w.lookup(ACTIONS, world.ev_action[sl]),
            w.lookup(CATEGORIES, world.ev_category[sl]),
            w.lookup(SESSION_CHANNELS, world.ev_channel[sl]),
            w.money(world.ev_amount_cents[sl], world.ev_amount_cents[sl] < 0),
            w.booleans(world.ev_discount[sl]),
            w.booleans(world.ev_free_shipping[sl]),
        ]

    w.write_csv(path, EVENT_COLUMNS, world.n_events, fields)


def _contact_fields(world: World, sl: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    uid = world.user_id[sl]
    n = len(uid)
    names = w.lookup([s.lower() for s in FIRST_NAMES], world.first_name[sl])
    email = w.join([names, w.const(".", n), w.digits(uid), w.const("@example.com", n)], ~world.has_address[sl, 0])
    # +1 555 numbers are reserved for fiction; the user id keeps them unique.
    phone = w.join([w.const("+1555", n), w.zero_padded(uid % 10_000_000, 7)], ~world.has_address[sl, 1])
    token = w.join([w.const("ptk_", n), w.hex16(world.push_token[sl])], ~world.has_address[sl, 2])
    return email, phone, token


def _write_users_csv(world: World, path: Path) -> None:
    def fields(lo: int, hi: int) -> list[np.ndarray]:
        sl = slice(lo, hi)
        email, phone, token = _contact_fields(world, sl)
        return [
            w.digits(world.user_id[sl]),
            w.booleans(world.consent[sl, 0]),
            w.booleans(world.consent[sl, 1]),
            w.booleans(world.consent[sl, 2]),
            email,
            phone,
            token,
            w.lookup(TIMEZONES, world.truth.timezone[sl]),
            w.lookup(FIRST_NAMES, world.first_name[sl]),
            w.timestamps(world.updated_at[sl]),
        ]

    w.write_csv(path, USER_COLUMNS, len(world.user_id), fields)


def _action_codes(catalog: Catalog, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n_values, n_channels, n_timings = len(catalog.values), len(catalog.channels), len(catalog.timings)
    timing = action % n_timings
    channel = action // n_timings % n_channels
    value = action // (n_timings * n_channels) % n_values
    typ = action // (n_timings * n_channels * n_values)
    return typ, value, channel, timing


def _write_offers_csv(world: World, catalog: Catalog, path: Path) -> None:
    def fields(lo: int, hi: int) -> list[np.ndarray]:
        sl = slice(lo, hi)
        typ, value, channel, timing = _action_codes(catalog, world.of_action[sl])
        return [
            w.prefixed("o", np.arange(lo + 1, hi + 1)),
            w.digits(world.of_user[sl]),
            w.timestamps(world.of_sent_at[sl]),
            w.lookup(catalog.offer_types, typ),
            w.lookup(_value_labels(catalog), value),
            w.lookup(catalog.channels, channel),
            w.lookup(catalog.timings, timing),
            w.floats(world.of_propensity[sl]),
            w.booleans(world.of_opened[sl]),
            w.booleans(world.of_clicked[sl]),
            w.booleans(world.of_converted[sl]),
            w.money(world.of_revenue_cents[sl]),
        ]

    w.write_csv(path, OFFER_COLUMNS, world.n_offers, fields)


def _datetimes(seconds: np.ndarray) -> list:
    return np.asarray(seconds, dtype=np.int64).astype("datetime64[s]").astype(object).tolist()


def _optional_bools(values: np.ndarray) -> list:
    v = np.asarray(values, dtype=np.int8)
    return [None if x < 0 else bool(x) for x in v.tolist()]


def _write_workbook(world: World, catalog: Catalog, path: Path, end_date: dt.date) -> None:
    def event_columns(lo: int, hi: int) -> list[list]:
        sl = slice(lo, hi)
        cents = world.ev_amount_cents[sl]
        return [
            [f"e{i}" for i in range(lo + 1, hi + 1)],
            world.ev_user[sl].tolist(),
            [f"s{i}" for i in world.ev_session[sl].tolist()],
            _datetimes(world.ev_time[sl]),
            [ACTIONS[i] for i in world.ev_action[sl].tolist()],
            [CATEGORIES[i] for i in world.ev_category[sl].tolist()],
            [SESSION_CHANNELS[i] for i in world.ev_channel[sl].tolist()],
            [None if c < 0 else c / 100 for c in cents.tolist()],
            _optional_bools(world.ev_discount[sl]),
            _optional_bools(world.ev_free_shipping[sl]),
        ]

    def user_columns(lo: int, hi: int) -> list[list]:
        sl = slice(lo, hi)
        contacts = [
            [None if not line else line.decode() for line in _field_strings(f)] for f in _contact_fields(world, sl)
        ]
        return [
            world.user_id[sl].tolist(),
            world.consent[sl, 0].tolist(),
            world.consent[sl, 1].tolist(),
            world.consent[sl, 2].tolist(),
            *contacts,
            [TIMEZONES[i] for i in world.truth.timezone[sl].tolist()],
            [FIRST_NAMES[i] for i in world.first_name[sl].tolist()],
            _datetimes(world.updated_at[sl]),
        ]

    def offer_columns(lo: int, hi: int) -> list[list]:
        sl = slice(lo, hi)
        typ, value, channel, timing = _action_codes(catalog, world.of_action[sl])
        return [
            [f"o{i}" for i in range(lo + 1, hi + 1)],
            world.of_user[sl].tolist(),
            _datetimes(world.of_sent_at[sl]),
            [catalog.offer_types[i] for i in typ.tolist()],
            [catalog.values[i] for i in value.tolist()],
            [catalog.channels[i] for i in channel.tolist()],
            [catalog.timings[i] for i in timing.tolist()],
            world.of_propensity[sl].tolist(),
            world.of_opened[sl].tolist(),
            world.of_clicked[sl].tolist(),
            world.of_converted[sl].tolist(),
            (world.of_revenue_cents[sl] / 100).tolist(),
        ]

    stamp = dt.datetime.combine(end_date, dt.time())
    w.write_xlsx(
        path,
        [
            ("events", EVENT_COLUMNS, world.n_events, event_columns),
            ("users", USER_COLUMNS, len(world.user_id), user_columns),
            ("offers", OFFER_COLUMNS, world.n_offers, offer_columns),
        ],
        stamp,
    )


def _field_strings(matrix: np.ndarray) -> list[bytes]:
    """The text of each row of a field matrix (NUL padding dropped)."""
    width = matrix.shape[1]
    rows = np.ascontiguousarray(matrix).view(f"S{width}").ravel().tolist()
    return [row.replace(b"\0", b"") for row in rows]
