"""The logged offers learning and off-policy evaluation read: every logged decision of a window with
the context the system had when it made it (`load_logged_offers`, one SQL path), and the fit of the
response model to them (`fit_response_model`).

`load_logged_offers` reads `recsys.v_logged_offers` in one COPY: the features as of each decision's
date, the consent the user had when the offer was sent, the offer as a catalog action and its
outcome. A decision is an offer or a rest (the policy chose no offer: the catalog's rest action,
reward 0, nothing opened). Learning takes its arrays with `OfferLog.response_fit_logs` (offers
only: a rest says nothing of how users answer offers); off-policy evaluation
(`recsys.evaluation.ope`) the decisions it can use, rests included, with `OfferLog.evaluable`.
Called by training, evaluation and the benchmarks.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from recsys.config.catalog import ALLOWED_CHANNELS, Catalog
from recsys.config.reward import RewardRules
from recsys.config.settings import Settings, package_dir
from recsys.data.features import build_feature_range
from recsys.data.logged_sample import probe_window, query_settings
from recsys.db import Connection, fetch_all
from recsys.db.sqlfiles import load_sql
from recsys.config.features import PRIOR_SHRUNK_FEATURES
from recsys.model.observation import CONSENT_FEATURES, FEATURE_NAMES, N_FEATURES, STORED_FEATURES, normalise
from recsys.model.response import ResponseModel
from recsys.model.response_fit import FitConfig, FitRequest, LoggedOffers, fit_response_model_to_logs
from recsys.model.response_refit import BootstrapSample

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

OUTCOMES = ("opened", "clicked", "converted", "unsubscribed")
"""The view's outcome columns: true / false / null (unknown)."""


def fit_response_model(
    conn: Connection,
    settings: Settings,
    catalog: Catalog,
    rules: RewardRules,
    as_of: date,
    *,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    config: FitConfig | None = None,
) -> ResponseModel:
    """Fit the response model to the offers logged before `as_of` (00:00 UTC).

    Each logged offer is explained by the features the system had when it was sent (features as of
    its send date, `recsys.v_logged_offers`); send dates whose features were never built are built
    first (`recsys.data.features.build_feature_range`; this commits). Offers of users who have no
    feature row even then (no event in the recency window before the send date) are left out and
    counted. The consent flags of the observation (which the heads do not read) are the consent at
    the send (`load_logged_offers`).

    The arguments are checked first (`recsys.model.response_fit.FitRequest`), before anything is built.
    The fit itself, with its held-out report: `recsys.model.response_fit.fit_response_model_to_logs`.
    """
    request = FitRequest(
        catalog, rules, as_of, holdout_fraction=holdout_fraction, seed=seed, config=config or FitConfig()
    )
    logs, prepared = _response_fit_logs(conn, settings, request)
    return fit_response_model_to_logs(logs, request, prepared=prepared)


def fit_response_model_with_bootstrap(
    conn: Connection,
    settings: Settings,
    catalog: Catalog,
    rules: RewardRules,
    as_of: date,
    *,
    seed: int = 0,
    config: FitConfig | None = None,
) -> tuple[ResponseModel, BootstrapSample | None]:
    """`fit_response_model`, and the training offers it learned from, kept to refit it on
    resamples of its users (`recsys.model.response_refit.BootstrapSample`; None when it learned
    from none). The logs are loaded once; only the training rows are kept."""
    request = FitRequest(catalog, rules, as_of, seed=seed, config=config or FitConfig())
    logs, prepared = _response_fit_logs(conn, settings, request)
    return fit_response_model_to_logs(logs, request, prepared=prepared), BootstrapSample.of(logs, request)


def _response_fit_logs(
    conn: Connection, settings: Settings, request: FitRequest
) -> tuple[LoggedOffers, dict[str, Any]]:
    """The logged offers the fit of `request` reads (point-in-time features built first), and what
    building and loading took.

    Far over the fit's bound (`FitConfig.max_offers`), the read itself is a sample, drawn in the
    database (`_database_sample`): every offer of the last `recent_days` days and a uniform share
    of the older ones, each weighted by the inverse of that share (`LoggedOffers.weight`), so that
    the fit's bounded sample (`recsys.model.fit_sample.bounded_sample`), drawn from it, stands for
    all the logs as before. The prepared report's `read_rate` is that share (1: every offer)."""
    started = time.perf_counter()
    as_of, config = request.as_of, request.config
    since = None if config.log_window_days is None else as_of - timedelta(days=config.log_window_days)
    built = ensure_point_in_time_features(conn, settings, as_of, since=since)
    built_seconds = time.perf_counter() - started
    rate, keep_from = _database_sample(conn, request, since)
    while True:
        logs = load_logged_offers(
            conn,
            request.catalog,
            since=since,
            until=as_of,
            by="send",
            rests=False,
            sample_rate=rate,
            sample_seed=request.seed,
            sample_keep_from=keep_from,
        ).response_fit_logs(request.catalog)
        if rate is None:
            break
        older = np.ones(len(logs.usable), dtype=bool)
        if keep_from is not None:
            older = logs.send_day < _day_number(keep_from)
        sampled = int((logs.usable & older).sum())
        needed = config.max_offers - int((logs.usable & ~older).sum())  # type: ignore[operator]
        if sampled >= needed:
            logs.weight = np.where(older, 1.0 / rate, 1.0)  # each sampled offer stands for 1 / rate
            break
        log.info("response model: %d sampled offers read at rate %.6f, %d needed: reading more", sampled, rate, needed)
        rate = min(1.0, rate * _REREAD_MARGIN * needed / max(sampled, 1))
        rate = None if rate >= 1.0 else rate
    load_seconds = time.perf_counter() - started - built_seconds
    return logs, {
        "feature_dates_built": len(built),
        "build_seconds": built_seconds,
        "load_seconds": load_seconds,
        "read_rate": 1.0 if rate is None else float(f"{rate:.6g}"),
    }


_READ_MARGIN = 1.1
"""How many more older offers a database sample reads than the fit's bound needs, after the share
the probe measured with the features of their day (`probe_window`): room for chance, in the probe
(its share of about 20,000 offers is known to within about 3% at three standard errors) and in the
sample. Each offer read costs memory: with 1.5 here, the 300k-user retrain night of
bench/bench_nightly.py peaked at 3.71 GB, against 2.98 GB with two reads (the second at
`_REREAD_MARGIN`). A read that still falls short is read again."""

_REREAD_MARGIN = 1.05
"""The same, for a read after one that fell short: that read measured the share of the sampled
offers the fit can use, so only chance is left to cover (the usable count of a 300,000-offer
sample varies by about 0.2%). With the first margin again, the 1M-user shop's second read took
about 900,000 offers for a bound of 300,000, the night's peak memory (docs/performance.md)."""

_READ_WORTH_IT = 0.5
"""The fit reads a database sample only when it would read at most this share of the older offers:
nearer to all of them, the sample would save little and add a second stage to the weights."""


def _day_number(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def _database_sample(conn: Connection, request: FitRequest, since: date | None) -> tuple[float | None, date | None]:
    """(the share of the older offers the fit's read keeps, the first decision date it keeps
    whole): (None, None) to read every offer. From upper bounds of the window's offers
    (sql/logged_offers/sent_upper_bound.sql) and the share of them with the features of their day
    (`probe_window`), mirroring `bounded_sample`: every recent offer and enough older ones to fill
    `max_offers` with usable offers, with a margin; when the recent ones alone exceed it, a uniform
    share of all of them. Upper bounds within `max_offers`: every offer, without the probe."""
    config = request.config
    if config.max_offers is None:
        return None, None
    recent_from = request.as_of - timedelta(days=config.recent_days)
    row = fetch_all(
        conn,
        logged_offers_sql("sent_upper_bound"),
        {"sent_from": _midnight(since), "sent_before": _midnight(request.as_of), "recent_from": recent_from},
    )[0]
    recent, older = int(row["recent"]), int(row["older"])
    if recent + older <= config.max_offers:  # every offer fits, whatever share of them is usable
        return None, None
    probe = probe_window(
        conn,
        upper=recent + older,
        sent_from=_midnight(since),
        sent_before=_midnight(request.as_of),
        seed=request.seed,
        recent_from=recent_from,
    )
    recent_usable = recent * probe.share("with_features", "recent")
    if recent_usable >= config.max_offers:
        rate = _READ_MARGIN * config.max_offers / max((recent + older) * probe.share("with_features"), 1)
        keep_from = None
    else:
        usable_older = older * probe.share("with_features", "older")
        rate, keep_from = _READ_MARGIN * (config.max_offers - recent_usable) / max(usable_older, 1), recent_from
    return (rate, keep_from) if rate <= _READ_WORTH_IT else (None, None)


def ensure_point_in_time_features(
    conn: Connection, settings: Settings, as_of: date, *, since: date | None = None
) -> list[date]:
    """Build the features of every send date before `as_of` (from `since`) whose logged offers lack them.

    A send date is built when it has no feature rows at all (then every offer of that date has
    `has_features` false), or when its rows were built before migration 013 (they lack the
    prior-shrunk columns of the observation). A date with rows can still lack a user who had no events in the recency
    window; rebuilding would not add that user, so it is not rebuilt. (A date whose build found no
    user at all, the first day of a shop's data, is rebuilt each time: that build reads no events.)
    Consecutive missing dates are built as one range. Returns the dates built; commits.
    """
    rows = fetch_all(
        conn,
        logged_offers_sql("missing_feature_dates"),
        {"before": _midnight(as_of), "after": None if since is None else _midnight(since)},
    )
    missing = [r["as_of"] for r in rows]
    conn.commit()
    runs: list[tuple[date, date]] = []
    for d in missing:
        if runs and d == runs[-1][1] + timedelta(days=1):
            runs[-1] = (runs[-1][0], d)
        else:
            runs.append((d, d))
    for start, end in runs:
        log.info("response model: building point-in-time features %s to %s", start, end)
        build_feature_range(conn, settings, start, end)
    return missing


def logged_offers_sql(name: str) -> str:
    """The text of sql/logged_offers/<name>.sql."""
    return load_sql(package_dir("sql"), f"logged_offers/{name}")


def _midnight(day: date | None) -> dt.datetime | None:
    return None if day is None else dt.datetime.combine(day, dt.time(0, 0), tzinfo=dt.UTC)


@dataclass(frozen=True)
class OfferLog:
    """Logged decisions, one row each, with the context the system had when it made each.

    `rows` holds the view's decision and outcome columns, `has_features`, the raw features (null
    without features), `email_consent` / `sms_consent` / `push_consent` (the consent when the offer
    was sent), `decision` (offer or rest) and `action_id` (the catalog action of the logged
    decision: a rest is the catalog's rest action; -1 when the catalog has no such action: no
    policy on this catalog can choose it).
    """

    rows: pd.DataFrame
    obs: np.ndarray  # float32 (n, N_FEATURES), built like recsys.model.observation; 0 without features
    mask: np.ndarray  # bool (n, n_actions): the actions the user could receive when the offer was sent
    action_ids: np.ndarray  # int64 (n,)
    propensity: np.ndarray  # float64 (n,): the logging policy's probability of the logged offer; nan: unknown
    skipped: dict[str, int] = field(default_factory=dict)
    """Logged offers of the window left out, by reason: no features for the day, unknown propensity."""

    def __len__(self) -> int:
        return len(self.action_ids)

    @property
    def is_rest(self) -> np.ndarray:
        """bool (n,): the decision was a rest (no offer; its reward is 0)."""
        if "decision" not in self.rows:
            return np.zeros(len(self), dtype=bool)
        return (self.rows["decision"] == "rest").to_numpy(dtype=bool)

    def evaluable(self) -> OfferLog:
        """The decisions off-policy evaluation can use: those with the features of their day and a
        known propensity. The others are added to `skipped` (`no_features`, `no_propensity`)."""
        has_features = self.rows["has_features"].to_numpy(dtype=bool)
        known = ~np.isnan(self.propensity)
        keep = has_features & known
        left_out = {"no_features": int((~has_features).sum()), "no_propensity": int((has_features & ~known).sum())}
        return replace(
            self,
            rows=self.rows.loc[keep].reset_index(drop=True),
            obs=self.obs[keep],
            mask=self.mask[keep],
            action_ids=self.action_ids[keep],
            propensity=self.propensity[keep],
            skipped={k: self.skipped.get(k, 0) + v for k, v in left_out.items()},
        )

    def sample(self, max_rows: int | None, seed: int = 0) -> OfferLog:
        """At most `max_rows` of the decisions, a uniform sample without replacement (by `seed`) in
        their order; all of them when there are fewer (or `max_rows` is None). A mean over the
        sample estimates the mean over all without bias, and a bootstrap over the sample gives its
        interval, sampling included."""
        if max_rows is None or len(self) <= max_rows:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), max_rows, replace=False))
        return replace(
            self,
            rows=self.rows.iloc[keep].reset_index(drop=True),
            obs=self.obs[keep],
            mask=self.mask[keep],
            action_ids=self.action_ids[keep],
            propensity=self.propensity[keep],
        )

    def response_fit_logs(self, catalog: Catalog) -> LoggedOffers:
        """The arrays the response model learns from (`recsys.model.response_fit.LoggedOffers`).

        Usable: offers with features whose type, channel and timing `catalog` has (the value may lie
        between the catalog's values: the model reads it as a number). Rests are never usable
        (counted as `rests`): nothing was sent, so there is no open or click rate to learn from
        them, and their value is known, 0.
        """
        import pandas as pd

        rows = self.rows
        n = len(rows)
        index = {
            column: pd.Index(list(names)).get_indexer(rows[column])
            for column, names in (
                ("offer_type", catalog.offer_types),
                ("channel", catalog.channels),
                ("timing", catalog.timings),
            )
        }
        has_features = rows["has_features"].to_numpy(dtype=bool)
        in_catalog = (index["offer_type"] >= 0) & (index["channel"] >= 0) & (index["timing"] >= 0)
        rest = self.is_rest
        usable = has_features & in_catalog & ~rest
        send_day = pd.to_datetime(rows["features_as_of"]).to_numpy("datetime64[D]").astype(np.int64)
        used = send_day[usable]
        epoch = date(1970, 1, 1)
        return LoggedOffers(
            user_id=rows["user_id"].to_numpy(dtype=np.int64),
            send_day=send_day,
            obs=self.obs.astype(np.float64),
            type_idx=np.maximum(index["offer_type"], 0),
            value=rows["offer_value"].to_numpy(dtype=np.float64),
            channel_idx=np.maximum(index["channel"], 0),
            timing_idx=np.maximum(index["timing"], 0),
            outcomes={c: rows[c].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan) for c in OUTCOMES},
            revenue=rows["revenue"].to_numpy(dtype=np.float64, na_value=np.nan),
            usable=usable,
            counts={
                "logged": n,
                "used": int(usable.sum()),
                "without_features": int((~has_features & ~rest).sum()),
                "outside_catalog": int((has_features & ~in_catalog & ~rest).sum()),
                "rests": int(rest.sum()),
            },
            window={
                "first_send_date": (epoch + timedelta(days=int(used.min()))).isoformat() if len(used) else None,
                "last_send_date": (epoch + timedelta(days=int(used.max()))).isoformat() if len(used) else None,
            },
        )


def load_logged_offers(
    conn: Connection,
    catalog: Catalog,
    *,
    since: date | None = None,
    until: date | None = None,
    by: Literal["decision", "send"] = "decision",
    rests: bool = True,
    sample_rate: float | None = None,
    sample_seed: int = 0,
    sample_keep_from: date | None = None,
) -> OfferLog:
    """Every decision of `recsys.v_logged_offers` with since <= its date < until (None: open), in one
    COPY: the offers, and with `rests` the rests (the policy chose no offer; reward 0).

    `by="decision"`: the date is the decision's (`features_as_of`, the night whose features the
    system used), rows in (date, offer id) order: off-policy evaluation's window. `by="send"`: the
    offers sent from `since` 00:00 UTC to `until` 00:00 UTC, rows in (send time, offer id) order:
    what the response model may learn from on the night `until`.

    The observation of each offer is the one the system had when it decided: the features as of
    that date (`recsys.user_features`, built exactly as `recsys.data.states.load_states` builds
    them) and the consent the user had when the offer was sent, never the consent of today (a
    user who unsubscribed since was still reachable then; one who consents today may not have
    been). No table keeps a history of consent, so it is read from the records the database holds,
    each with its moment: the users row (its opt-in, from its `updated_at`, else its load, on),
    every unsubscribe the system recorded (`recsys.consent_revocations`: consent before it, none
    from it on) and every offer sent on the channel (consent then). The consent at the send is the
    latest record's at or before it; before a user's first record, what that record says held just
    before it. The mask allows a channel with consent at the send and an address now (addresses
    keep no history), and always the offer's own channel: it reached the user there.
    (sql/logged_offers/logged_offers.sql.)

    `sample_rate` (in (0, 1); None: all) reads a uniform sample of the decisions instead, chosen
    in the database by a hash of each offer id with `sample_seed`: each decision is in it with
    that probability, and a larger rate with the same seed keeps every decision of a smaller one.
    With `sample_keep_from`, every decision of that date or later (`features_as_of`) is kept whole.
    """
    if by not in ("decision", "send"):
        raise ValueError(f"by must be 'decision' or 'send', got {by!r}")
    if sample_rate is not None and not 0.0 < sample_rate < 1.0:
        raise ValueError(f"sample_rate must be in (0, 1) (or None: all), got {sample_rate!r}")
    by_send = by == "send"
    params = {
        "sent_from": _midnight(since) if by_send else None,
        "sent_before": _midnight(until) if by_send else None,
        "decided_from": None if by_send else since,
        "decided_before": None if by_send else until,
        "by_send": by_send,
        "with_rests": rests,
        "sample_rate": sample_rate,
        "sample_seed": int(sample_seed),
        "sample_keep_from": sample_keep_from,
    }
    buffer = io.StringIO()
    with conn.cursor() as cur, query_settings(cur):
        select = cur.mogrify(logged_offers_sql("logged_offers"), params).decode()
        cur.copy_expert(f"copy ({select}) to stdout with (format csv, header)", buffer)
    buffer.seek(0)
    return _offer_log(_read_rows(buffer, catalog), catalog)


TEXT_COLUMNS = ("offer_id", "source", "offer_type", "channel", "timing", "segment", "decision")
"""The text columns of recsys.v_logged_offers, read as text: a column whose first rows are all
empty (`segment` on decisions without features, the first rows of a large shop's read) would
otherwise be guessed chunk by chunk, with pandas' DtypeWarning and mixed types."""


def _read_rows(buffer: io.StringIO, catalog: Catalog) -> pd.DataFrame:
    """The CSV of sql/logged_offers/logged_offers.sql as a DataFrame with typed columns and the
    catalog's `action_id` of each logged offer (-1: not in the catalog)."""
    import pandas as pd

    booleans = (*OUTCOMES, "has_features", *(f"{c}_{s}" for s in ("consent", "reachable") for c in ALLOWED_CHANNELS))
    rows = pd.read_csv(
        buffer,
        dtype=dict.fromkeys(TEXT_COLUMNS, str)
        | {c: "boolean" for c in booleans},
        true_values=["t"],
        false_values=["f"],
        keep_default_na=False,
        na_values=[""],
    )
    rows["sent_at"] = pd.to_datetime(rows["sent_at"], utc=True, format="ISO8601")
    rows["features_as_of"] = pd.to_datetime(rows["features_as_of"]).dt.date
    rows["offer_value"] = rows["offer_value"].astype(np.float64)
    actions = pd.DataFrame(
        [(a.offer_type, float(a.value), a.channel, a.timing, a.action_id) for a in catalog.actions],
        columns=["offer_type", "offer_value", "channel", "timing", "action_id"],
    )
    rows = rows.merge(
        actions, on=["offer_type", "offer_value", "channel", "timing"], how="left", validate="many_to_one"
    )
    rows["action_id"] = rows["action_id"].fillna(-1).astype(np.int64)
    return rows


_PRIOR_SHRUNK_COLUMNS = [FEATURE_NAMES.index(name) for name, _, _ in PRIOR_SHRUNK_FEATURES]


def _offer_log(rows: pd.DataFrame, catalog: Catalog) -> OfferLog:
    """The observations, masks and actions of the rows read by `load_logged_offers`."""
    n = len(rows)
    has_features = rows["has_features"].to_numpy(dtype=bool, na_value=False)
    raw = np.zeros((n, N_FEATURES))
    for name in STORED_FEATURES:
        raw[:, FEATURE_NAMES.index(name)] = rows[name].to_numpy(dtype=np.float64, na_value=np.nan)
    for name in CONSENT_FEATURES:  # the consent at the send: sql/logged_offers/logged_offers.sql
        raw[:, FEATURE_NAMES.index(name)] = rows[name].to_numpy(dtype=np.float64, na_value=0.0)
    # A date built before migration 013 lacks the prior-shrunk columns: its decisions have no
    # observation that today's models read, so they count as without features (never as zeros).
    # Learning rebuilds such dates first (ensure_point_in_time_features); evaluation skips them.
    before_priors = has_features & np.isnan(raw[:, _PRIOR_SHRUNK_COLUMNS]).any(axis=1)
    if before_priors.any():
        log.info(
            "%d logged decisions have features built before migration 013: left out as without features "
            "(`recsys features --backfill` rebuilds their dates)",
            int(before_priors.sum()),
        )
        has_features = has_features & ~before_priors
        rows["has_features"] = has_features
    raw[~has_features] = 0.0
    reachable = np.zeros((n, len(ALLOWED_CHANNELS)), dtype=bool)
    for k, channel in enumerate(ALLOWED_CHANNELS):
        reachable[:, k] = rows[f"{channel}_reachable"].to_numpy(dtype=bool, na_value=False)
    unknown = int((rows["action_id"] < 0).sum())
    if unknown:
        log.info("%d logged offers are not in the catalog: no policy on it can choose them (weight 0)", unknown)
    return OfferLog(
        rows=rows.drop(columns=[f"{c}_reachable" for c in ALLOWED_CHANNELS]),
        obs=normalise(np.nan_to_num(raw)),
        mask=catalog.action_mask(reachable),
        action_ids=rows["action_id"].to_numpy(dtype=np.int64),
        propensity=rows["propensity"].to_numpy(dtype=np.float64, na_value=np.nan),
        skipped={},
    )
