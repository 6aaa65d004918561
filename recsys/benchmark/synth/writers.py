"""The generated tables as files: CSV (one file per table) or one .xlsx workbook.

The columns are the input format's (CONTRACT.md section 1, `recsys.data.extract.sheets.SHEETS`):
whatever the generator writes, the extract stage reads. Values are rendered from the world's internal
codes with the vectorised text builders of `recsys.benchmark.synth._write`. Called by
`recsys.benchmark.synth.generate.generate_data`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from recsys.benchmark.synth import _write as w
from recsys.benchmark.synth.params import CATEGORIES, FIRST_NAMES, TIMEZONES
from recsys.benchmark.synth.sessions import ACTIONS, SESSION_CHANNELS
from recsys.benchmark.synth.world import World
from recsys.config.catalog import Catalog
from recsys.data.extract.sheets import SHEETS

EVENT_COLUMNS = SHEETS["events"].columns
USER_COLUMNS = SHEETS["users"].columns
OFFER_COLUMNS = SHEETS["offers"].columns


def _value_labels(catalog: Catalog) -> list[str]:
    return [f"{v:g}" for v in catalog.values]


def write_events_csv(world: World, path: Path) -> None:
    """events.csv of the world."""

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


def write_users_csv(world: World, path: Path) -> None:
    """users.csv of the world."""

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


def write_offers_csv(world: World, catalog: Catalog, path: Path) -> None:
    """offers.csv of the world."""

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


def write_workbook(world: World, catalog: Catalog, path: Path, end_date: dt.date) -> None:
    """The three tables as sheets of one workbook, dated `end_date` 00:00."""

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
