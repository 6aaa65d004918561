"""The synthetic world of one generation: users with latent traits, their shopping sessions and the
past campaigns, as numpy columns ready to be written, plus the ground truth that produced them.

- Window: the `days` days before `end_date`; everything happens in [end_date - days, end_date) UTC.
- Users: traits and initial consent from `recsys.benchmark.synth.truth.sample_traits`; time zone,
  first name, contact addresses (always where consented, sometimes without) and the user row's
  `updated_at` (before the window) from the profile stream.
- Organic sessions and their events: `recsys.benchmark.synth.sessions`; past campaigns and the
  sessions their clicks start: `recsys.benchmark.synth.campaigns`.

Each component draws from its own `SeedSequence.spawn` stream. Called by
`recsys.benchmark.synth.generate.generate_data`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from recsys.benchmark.synth.campaigns import CampaignReplay
from recsys.benchmark.synth.clock import DAY, Window
from recsys.benchmark.synth.params import CATEGORIES, CHANNELS, FIRST_NAMES, TIMEZONES, SynthParams
from recsys.benchmark.synth.sessions import Sessions, organic_sessions, session_events
from recsys.benchmark.synth.truth import TRUTH_FORMAT, GroundTruth, catalog_meta, sample_traits
from recsys.config.catalog import Catalog

GENERATOR_VERSION = "1.0"


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


@dataclass(frozen=True)
class _Profiles:
    """What the user rows say besides consent: drawn from the profile stream."""

    timezone: np.ndarray
    first_name: np.ndarray
    has_address: np.ndarray
    push_token: np.ndarray
    updated_at: np.ndarray


def _draw_profiles(rng: np.random.Generator, consent: np.ndarray, p: SynthParams, window_start: int) -> _Profiles:
    """Time zone, first name, contact addresses and `updated_at` (before the window) per user."""
    n = len(consent)
    tz_weights = np.asarray(p.timezone_weights) / sum(p.timezone_weights)
    tz = rng.choice(len(TIMEZONES), size=n, p=tz_weights).astype(np.int8)
    first_name = rng.integers(0, len(FIRST_NAMES), size=n)
    has_address = consent | (rng.random((n, 3)) < np.asarray(p.address_without_consent))
    push_token = rng.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)
    updated_at = window_start - (rng.random(n) * p.profile_age_days * DAY).astype(np.int64) - 1
    return _Profiles(tz, first_name, has_address, push_token, updated_at)


def _truth_meta(*, seed: int, users: int, days: int, end_date: dt.date, catalog: Catalog) -> dict:
    """The metadata stored with the truth."""
    return {
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


def _organic_purchases(organic: Sessions, events: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Times (sorted) and user rows of the organic purchases."""
    purchases = events["action"] == 2
    buy_time = events["time"][purchases]
    buy_user = organic.user[events["session"][purchases]]
    order = np.argsort(buy_time, kind="stable")
    return buy_time[order], buy_user[order]


def _all_sessions(
    organic: Sessions, org_events: dict[str, np.ndarray], offer_sessions: Sessions, off_events: dict[str, np.ndarray]
) -> tuple[Sessions, dict[str, np.ndarray]]:
    """Organic and offer sessions in one list, with their events (session numbers into that list)."""
    sessions = Sessions.concat([organic, offer_sessions])
    events = {k: np.concatenate([org_events[k], off_events[k]]) for k in org_events}
    events["session"][len(org_events["session"]) :] += len(organic.user)
    return sessions, events


def _events_in_order(sessions: Sessions, events: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The event columns of `World`: sessions in order of start (then user), numbered from 1, and
    events grouped by session in that order. Consumes `events`."""
    session_order = np.lexsort((sessions.user, sessions.start))
    n_ev = np.bincount(events["session"], minlength=len(sessions.user))
    ev_first = np.cumsum(n_ev) - n_ev
    lens = n_ev[session_order]
    new_first = np.cumsum(lens) - lens
    take = np.repeat(ev_first[session_order] - new_first, lens) + np.arange(int(lens.sum()))
    session_number = np.empty(len(session_order), dtype=np.int64)
    session_number[session_order] = np.arange(1, len(session_order) + 1)
    ev_session_old = events.pop("session")[take]
    return {
        "ev_user": sessions.user[ev_session_old] + 1,
        "ev_session": session_number[ev_session_old],
        "ev_time": events.pop("time")[take],
        "ev_action": events.pop("action")[take],
        "ev_category": events.pop("category")[take],
        "ev_channel": sessions.channel[ev_session_old],
        "ev_amount_cents": events.pop("amount_cents")[take],
        "ev_discount": events.pop("discount")[take],
        "ev_free_shipping": events.pop("free_shipping")[take],
    }


def _offer_columns(offers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The offer columns of `World` (user ids instead of rows)."""
    return {
        "of_user": offers["user"] + 1,
        "of_sent_at": offers["sent_at"],
        "of_action": offers["action"],
        "of_propensity": offers["propensity"],
        "of_opened": offers["opened"],
        "of_clicked": offers["clicked"],
        "of_converted": offers["converted"],
        "of_revenue_cents": offers["revenue_cents"],
    }


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
    window = Window.before(end_date, days, TIMEZONES)

    traits, consent0 = sample_traits(rng_traits, users, p)
    profiles = _draw_profiles(rng_profile, consent0, p, window.start)
    user_id = np.arange(1, users + 1, dtype=np.int64)
    meta = _truth_meta(seed=seed, users=users, days=days, end_date=end_date, catalog=catalog)
    consent = consent0.copy()
    truth = GroundTruth(
        user_ids=user_id,
        traits=traits,
        consent=consent,
        timezone=profiles.timezone,
        catalog=catalog,
        params=p,
        meta=meta,
    )

    organic = organic_sessions(rng_organic, truth, consent0, profiles.timezone, window.offsets, window.start, days)
    org_events = session_events(rng_organic, truth, organic, window.end)
    buy_time, buy_user = _organic_purchases(organic, org_events)
    replay = CampaignReplay(truth, consent, profiles.updated_at, window, buy_time, buy_user)
    offers, offer_sessions = replay.run(rng_campaign)
    off_events = session_events(rng_offer_events, truth, offer_sessions, window.end)
    sessions, events = _all_sessions(organic, org_events, offer_sessions, off_events)
    del org_events, off_events  # the concatenated copies are all that is needed from here on

    truth.consent = consent
    return World(
        truth=truth,
        window_start=window.start,
        end=window.end,
        user_id=user_id,
        consent=consent,
        has_address=profiles.has_address,
        first_name=profiles.first_name,
        push_token=profiles.push_token,
        updated_at=profiles.updated_at,
        **_events_in_order(sessions, events),
        **_offer_columns(offers),
        meta=meta,
    )
