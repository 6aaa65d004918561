"""The hidden ground truth of the synthetic shop: user traits and the one offer-response model.

`GroundTruth` is the only thing that knows the latent traits (`recsys.benchmark.synth.traits`) and how
a user responds to an offer (`recsys.benchmark.synth.response`). The generator
(`recsys.benchmark.synth.generate`) draws the traits and simulates every campaign outcome with
`GroundTruth.response`; evaluation code loads the saved truth (`GroundTruth.load`, the file:
`recsys.benchmark.synth.truth_file`) to score a policy by its true expected value. Loading, feature
and training code never import it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.benchmark.synth.clock import HOUR, epoch_seconds, release_seconds, utc_offsets
from recsys.benchmark.synth.params import CHANNELS, OFFER_TYPES, TIMEZONES, SynthParams
from recsys.benchmark.synth.response import Response, offer_response
from recsys.benchmark.synth.traits import Traits, sample_traits
from recsys.benchmark.synth.truth_file import TRUTH_FORMAT, catalog_meta, read_truth, write_truth
from recsys.config.catalog import BEST_HOUR, Catalog
from recsys.errors import GenerateError

__all__ = [
    "TRUTH_FORMAT",
    "FixedVsOracle",
    "GroundTruth",
    "PersonalisationReport",
    "Response",
    "Traits",
    "catalog_meta",
    "sample_traits",
]

_CHUNK_USERS = 8_192


@dataclass(frozen=True)
class FixedVsOracle:
    """Mean value per user of the per-user best action and of the best single action."""

    oracle_mean: float
    fixed_action_id: int
    fixed_action: str
    fixed_mean: float

    @property
    def ratio(self) -> float:
        return self.fixed_mean / self.oracle_mean if self.oracle_mean > 0 else float("nan")


@dataclass(frozen=True)
class PersonalisationReport:
    """How much personalisation is worth under the truth (offers_last_7d = 0, an average weekday)."""

    n_users: int
    with_consent: FixedVsOracle
    """Only channels the user consents to (others are worth 0: they cannot be sent)."""
    ignoring_consent: FixedVsOracle
    """Every action allowed: heterogeneity of preferences alone."""


def _delay_hours(catalog: Catalog, timing: str) -> float:
    """Hours from the release to the send of a timing; NaN for best_hour (no fixed delay)."""
    return float("nan") if timing == BEST_HOUR else catalog.timing_delay_minutes[timing] / 60.0


def with_rest(values: np.ndarray, catalog: Catalog) -> np.ndarray:
    """Values (n, truth's offers) as values (n, catalog.n_actions): the rest, when `catalog` has it,
    is worth exactly 0 (nothing sent). The truth knows offers only: the simulated shop never rested."""
    if not catalog.rest_action:
        return values
    return np.concatenate([values, np.zeros((len(values), 1))], axis=1)


class GroundTruth:
    """Latent traits of the synthetic users and the response model; see the module docstring."""

    def __init__(
        self,
        *,
        user_ids: np.ndarray,
        traits: Traits,
        consent: np.ndarray,
        timezone: np.ndarray,
        catalog: Catalog,
        params: SynthParams,
        meta: dict,
    ) -> None:
        self.user_ids = np.asarray(user_ids, dtype=np.int64)
        self.traits = traits
        self.consent = np.asarray(consent, dtype=bool)
        """(n, 3) consent per channel of CHANNELS at the end of the data."""
        self.timezone = np.asarray(timezone, dtype=np.int8)
        """Index into TIMEZONES per user."""
        self.catalog = catalog
        self.params = params
        self.meta = dict(meta)
        self._order = np.argsort(self.user_ids, kind="stable")
        self._sorted_ids = self.user_ids[self._order]
        actions = catalog.actions
        self.action_type = np.array([OFFER_TYPES.index(a.offer_type) for a in actions], dtype=np.int64)
        self.action_value = np.array([a.value for a in actions], dtype=np.float64)
        self.action_channel = np.array([CHANNELS.index(a.channel) for a in actions], dtype=np.int64)
        self.action_delay_hours = np.array([_delay_hours(catalog, a.timing) for a in actions], dtype=np.float64)
        """Hours from the release to the send, per action; NaN for best_hour (sent at `best_send_hour`)."""
        self.best_send_hour = np.mod(np.round(self.session_hour()), 24.0)
        """Local hour at which a best_hour offer goes out, per user row: the centre of the user's
        sessions rounded (what `preferred_local_hour` learns from many sessions). Benchmarks that
        schedule through the SQL value the hours it gives instead (`response(send_hour=...)`)."""
        self._focus = traits.focus()
        self._end_date = dt.date.fromisoformat(self.meta["end_date"])

    @property
    def n_actions(self) -> int:
        return len(self.action_type)

    # --- users and nights ------------------------------------------------------------------------

    def index_of(self, user_ids: np.ndarray) -> np.ndarray:
        """Row index of each user id; unknown ids are an error that names them."""
        ids = np.asarray(user_ids, dtype=np.int64)
        pos = np.searchsorted(self._sorted_ids, ids)
        pos = np.minimum(pos, len(self._sorted_ids) - 1)
        found = self._sorted_ids[pos] == ids
        if not found.all():
            missing = np.unique(ids[~found])[:5].tolist()
            raise GenerateError(
                f"user ids {missing} are not in the ground truth ({len(self.user_ids):,} users, "
                f"ids {self._sorted_ids[0]}..{self._sorted_ids[-1]})"
            )
        return self._order[pos]

    def release_local_hour(self, night: dt.date | None = None) -> np.ndarray:
        """Local hour (per user) at which the night's offers are released, before the timing's delay."""
        day = night or self._end_date
        offsets = utc_offsets(TIMEZONES, day, 1)[:, 0]
        offset = offsets[self.timezone]
        start = epoch_seconds(day)
        release = release_seconds(offset, start, self.params.release_hour_local, self.params.publish_hour_utc)
        return (release - start + offset) / HOUR

    def _weekday_factor(self, night: dt.date | None) -> float:
        return 1.0 if night is None else float(self.params.weekday_open_factor[night.weekday()])

    # --- the response model ----------------------------------------------------------------------

    def response(
        self,
        idx: np.ndarray,
        action_ids: np.ndarray,
        *,
        night: dt.date | None = None,
        offers_last_7d: np.ndarray | int = 0,
        release_hour: np.ndarray | None = None,
        send_hour: np.ndarray | None = None,
    ) -> Response:
        """Outcome probabilities for user rows `idx` and actions `action_ids` (broadcast together).

        `release_hour` (local, per user row of the whole truth) can be passed in when the caller
        computes many responses for the same night; by default it is computed for `night`.
        `send_hour` (local, broadcast with `idx`): the hour each offer actually goes out, in place
        of the release + the timing's delay (a best_hour offer: the user's `best_send_hour`).
        """
        a = np.asarray(action_ids)
        return self._response(
            np.asarray(idx),
            self.action_type[a],
            self.action_value[a],
            self.action_channel[a],
            self.action_delay_hours[a],
            night=night,
            offers_last_7d=offers_last_7d,
            release_hour=release_hour,
            send_hour=send_hour,
        )

    def _grid_response(
        self, rows: np.ndarray, *, night: dt.date | None, offers_last_7d: np.ndarray | int, release_hour: np.ndarray
    ) -> np.ndarray:
        """Expected values (len(rows), n_actions) of every action, computing each factor on its own axes."""
        resp = self._grid_factors(rows, night=night, offers_last_7d=offers_last_7d, release_hour=release_hour)
        return resp.expected_value(self.params.unsubscribe_penalty).reshape(len(rows), self.n_actions)

    def response_matrix(
        self,
        user_ids: np.ndarray,
        *,
        night: dt.date | None = None,
        offers_last_7d: np.ndarray | int = 0,
    ) -> Response:
        """Outcome probabilities of every action for each user: every field (len(user_ids), n_actions).
        Consent is not applied (`value_matrix` gives the values with it)."""
        idx = self.index_of(user_ids)
        resp = self._grid_factors(
            idx, night=night, offers_last_7d=offers_last_7d, release_hour=self.release_local_hour(night)
        )
        shape = np.broadcast_shapes(*(np.shape(getattr(resp, f)) for f in Response.__dataclass_fields__))
        return Response(
            **{
                f: np.broadcast_to(getattr(resp, f), shape).reshape(len(idx), self.n_actions)
                for f in Response.__dataclass_fields__
            }
        )

    def _grid_factors(
        self, rows: np.ndarray, *, night: dt.date | None, offers_last_7d: np.ndarray | int, release_hour: np.ndarray
    ) -> Response:
        """The response model of every action for user `rows`, each factor on its own axes.

        Actions are the catalog's product offer_types x values x channels x timings in that nested
        order, so the factors broadcast over a (users, types, values, channels, timings) grid.
        """
        cat = self.catalog
        typ = np.array([OFFER_TYPES.index(t) for t in cat.offer_types]).reshape(1, -1, 1, 1, 1)
        val = np.asarray(cat.values, dtype=np.float64).reshape(1, 1, -1, 1, 1)
        ch = np.array([CHANNELS.index(c) for c in cat.channels]).reshape(1, 1, 1, -1, 1)
        delay = np.array([_delay_hours(cat, t) for t in cat.timings]).reshape(1, 1, 1, 1, -1)
        k = np.asarray(offers_last_7d, dtype=np.float64)
        k = k.reshape(-1, 1, 1, 1, 1) if k.ndim == 1 else k
        return self._response(
            rows.reshape(-1, 1, 1, 1, 1),
            typ,
            val,
            ch,
            delay,
            night=night,
            offers_last_7d=k,
            release_hour=release_hour,
        )

    def _response(
        self,
        idx: np.ndarray,
        typ: np.ndarray,
        val: np.ndarray,
        ch: np.ndarray,
        delay_hours: np.ndarray,
        *,
        night: dt.date | None,
        offers_last_7d: np.ndarray | int,
        release_hour: np.ndarray | None,
        send_hour: np.ndarray | None = None,
    ) -> Response:
        """The response model on any broadcastable arrays of user rows and action attributes."""
        if send_hour is None:
            if release_hour is None:
                release_hour = self.release_local_hour(night)
            # best_hour (a NaN delay): at the user's best hour, else the release + the delay
            send_hour = np.where(np.isnan(delay_hours), self.best_send_hour[idx], release_hour[idx] + delay_hours)
        return offer_response(
            self.params,
            self.traits,
            self._focus,
            idx,
            typ,
            val,
            ch,
            send_hour=send_hour,
            offers_last_7d=np.asarray(offers_last_7d, dtype=np.float64),
            weekday_factor=self._weekday_factor(night),
        )

    def sample_order(
        self, rng: np.random.Generator, idx: np.ndarray, action_ids: np.ndarray | None = None
    ) -> np.ndarray:
        """Amount paid for one order per row: organic (no action) or converting on `action_ids`."""
        p = self.params
        tr = self.traits
        s = p.order_log_sd
        basket = tr.basket_mean[idx]
        if action_ids is None:
            return basket * np.exp(s * rng.standard_normal(len(idx)) - 0.5 * s * s)
        a = np.asarray(action_ids)
        typ = self.action_type[a]
        val = self.action_value[a]
        lift = np.where(
            typ == 2,
            1.0 + p.recommendation_basket_lift * tr.recommendation_affinity[idx] * self._focus[idx],
            np.where(typ == 3, 1.0 + p.bundle_basket_lift * tr.bundle_affinity[idx], 1.0),
        )
        listed = basket * lift * np.exp(s * rng.standard_normal(len(idx)) - 0.5 * s * s)
        return np.where(
            typ == 1, np.maximum(listed, val), np.where((typ == 0) | (typ == 3), listed * (1.0 - val / 100.0), listed)
        )

    # --- organic behaviour (what the traits make users do without an offer) ----------------------

    def session_rate(self) -> np.ndarray:
        """Organic sessions per day, per user."""
        return self.traits.activity_rate

    def session_hour(self) -> np.ndarray:
        """Local hour around which a user's sessions start: the same habit as reading messages (the
        preferred hour), except for a share `session_hour_decoupled_share` of the users, a fixed
        draw per truth (its user count), whose sessions centre `session_hour_decoupled_shift` hours
        later."""
        p, hour = self.params, self.traits.preferred_hour
        if p.session_hour_decoupled_share <= 0:
            return hour
        decoupled = np.random.default_rng([20261204, len(hour)]).random(len(hour)) < p.session_hour_decoupled_share
        return np.where(decoupled, np.mod(hour + p.session_hour_decoupled_shift, 24.0), hour)

    def session_channel_probabilities(self, consent: np.ndarray) -> np.ndarray:
        """(n, 5) probabilities of what brings an organic session: web, app, email, sms, push.

        The shop's newsletters, pushes and texts (not offers) bring a share
        messaging_session_share x responsiveness_c of sessions on each consented channel; of the rest,
        the app takes a share growing with push responsiveness (people who read pushes use the app).
        """
        p = self.params
        msg = p.messaging_session_share * self.traits.responsiveness * consent
        rest = 1.0 - msg.sum(axis=1)
        lo, hi = p.app_share_range
        app = rest * (lo + (hi - lo) * np.sqrt(self.traits.responsiveness[:, 2]))
        return np.column_stack([rest - app, app, msg])

    def organic_flag_probabilities(self) -> tuple[np.ndarray, np.ndarray]:
        """P(discount used), P(free shipping used) on an organic purchase, per user."""
        p = self.params
        return (
            p.organic_discount_base + p.organic_discount_slope * self.traits.discount_sensitivity,
            p.organic_free_shipping_base + p.organic_free_shipping_slope * self.traits.free_shipping_preference,
        )

    def category_cdf(self) -> np.ndarray:
        """(n, len(CATEGORIES)) cumulative category affinities, for drawing what a user views."""
        return np.cumsum(self.traits.category_affinity, axis=1)

    def top_category(self) -> np.ndarray:
        """The category a recommendation or bundle offer is about: the user's favourite."""
        return self.traits.top_category()

    # --- values ----------------------------------------------------------------------------------

    def expected_value(
        self,
        user_ids: np.ndarray,
        action_ids: np.ndarray,
        *,
        night: dt.date | None = None,
        offers_last_7d: np.ndarray | int = 0,
        respect_consent: bool = True,
    ) -> np.ndarray:
        """Expected net value (currency units) of sending offer action_ids[i] to user_ids[i].

        P(open) P(click|open) P(convert|click) E[net|convert] - contact cost - unsubscribe penalty
        P(unsubscribe), where E[net|convert] already subtracts the offer's cost. With
        `respect_consent`, an action on a channel the user does not consent to is worth 0 (it cannot
        be sent). `night=None` is an average weekday with the time-zone offsets of the truth's end date.
        """
        a = self._check_actions(action_ids)
        idx = self.index_of(user_ids)
        if idx.shape != a.shape:
            raise GenerateError(f"user_ids has shape {idx.shape} but action_ids has shape {a.shape}")
        value = self.response(idx, a, night=night, offers_last_7d=offers_last_7d).expected_value(
            self.params.unsubscribe_penalty
        )
        if respect_consent:
            value = np.where(self.consent[idx, self.action_channel[a]], value, 0.0)
        return value

    def value_matrix(
        self,
        user_ids: np.ndarray | None = None,
        *,
        night: dt.date | None = None,
        offers_last_7d: np.ndarray | int = 0,
        respect_consent: bool = True,
    ) -> np.ndarray:
        """Expected values, shape (n_users, n_actions), of every action for each user (all by default)."""
        idx = np.arange(len(self.user_ids)) if user_ids is None else self.index_of(user_ids)
        k = np.asarray(offers_last_7d, dtype=np.float64)
        if k.ndim == 1 and len(k) != len(idx):
            raise GenerateError(f"offers_last_7d has {len(k)} entries for {len(idx)} users")
        release = self.release_local_hour(night)
        out = np.empty((len(idx), self.n_actions), dtype=np.float64)
        for lo in range(0, len(idx), _CHUNK_USERS):
            rows = idx[lo : lo + _CHUNK_USERS]
            kk = k[lo : lo + _CHUNK_USERS] if k.ndim == 1 else k
            block = self._grid_response(rows, night=night, offers_last_7d=kk, release_hour=release)
            if respect_consent:
                block = np.where(self.consent[rows][:, self.action_channel], block, 0.0)
            out[lo : lo + len(rows)] = block
        return out

    def oracle_actions(self, user_ids: np.ndarray | None = None, **kw) -> np.ndarray:
        """The best action id per user under the truth (ties: the lowest id)."""
        return self.value_matrix(user_ids, **kw).argmax(axis=1)

    def best_fixed_action(self, user_ids: np.ndarray | None = None, **kw) -> int:
        """The single action with the highest mean value over the users."""
        return int(self.value_matrix(user_ids, **kw).mean(axis=0).argmax())

    def personalisation_report(self) -> PersonalisationReport:
        """Best fixed action vs per-user oracle, with and without consent, over all users."""
        n = len(self.user_ids)
        release = self.release_local_hour(None)
        col = {True: np.zeros(self.n_actions), False: np.zeros(self.n_actions)}
        best = {True: 0.0, False: 0.0}
        for lo in range(0, n, _CHUNK_USERS):
            rows = np.arange(lo, min(lo + _CHUNK_USERS, n))
            block = self._grid_response(rows, night=None, offers_last_7d=0, release_hour=release)
            col[False] += block.sum(axis=0)
            best[False] += float(block.max(axis=1).sum())
            block = np.where(self.consent[rows][:, self.action_channel], block, 0.0)
            col[True] += block.sum(axis=0)
            best[True] += float(block.max(axis=1).sum())
        labels = self.catalog.actions

        def summary(consent: bool) -> FixedVsOracle:
            fixed = int(col[consent].argmax())
            action = labels[fixed]
            return FixedVsOracle(
                oracle_mean=best[consent] / n,
                fixed_action_id=fixed,
                fixed_action=action.describe(self.catalog.value_units.get(action.offer_type, "")),
                fixed_mean=float(col[consent][fixed]) / n,
            )

        return PersonalisationReport(n_users=n, with_consent=summary(True), ignoring_consent=summary(False))

    def _check_actions(self, action_ids: np.ndarray) -> np.ndarray:
        a = np.asarray(action_ids)
        if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= self.n_actions):
            raise GenerateError(f"action ids must be integers in 0..{self.n_actions - 1}, got {a[:5].tolist()}...")
        return a.astype(np.int64)

    # --- the file --------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the truth as an .npz with its metadata (deterministic bytes for identical content)."""
        write_truth(self, path)

    @classmethod
    def load(cls, path: Path) -> GroundTruth:
        """Read a truth file written by `recsys generate-data`."""
        return cls(**read_truth(path))
