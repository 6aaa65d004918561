"""The offers learning reads: every logged decision with the features the system had when it was
made (`recsys.v_logged_offers`), as arrays for the response model, and the fit that joins the two.

`fit_response_model` builds missing point-in-time feature dates, loads the logs in one COPY and
fits `recsys.model.response` to them. Called by training and the benchmarks.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import time
from datetime import date, timedelta

import numpy as np
from psycopg2 import sql

from recsys.config.catalog import Catalog
from recsys.config.settings import Settings, package_dir
from recsys.data.features import build_feature_range
from recsys.db import Connection, fetch_all
from recsys.db.sqlfiles import load_sql
from recsys.model.observation import FEATURE_NAMES, N_FEATURES, normalise
from recsys.model.response import ResponseModel, check_rules_cover
from recsys.model.response_fit import FitConfig, LoggedOffers, fit_response_model_to_logs
from recsys.config.reward import RewardRules

log = logging.getLogger(__name__)


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
    counted.

    Consent flags, which the observation includes but the heads do not read, are approximated: the
    channel of a later offer to the user was consented then; otherwise the consent in `recsys.users`
    as it is now (the users table keeps no consent history).

    The fit itself, with its held-out report: `recsys.model.response_fit.fit_response_model_to_logs`.
    """
    config = config or FitConfig()
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    check_rules_cover(catalog, rules)
    started = time.perf_counter()
    since = None if config.log_window_days is None else as_of - timedelta(days=config.log_window_days)
    built = ensure_point_in_time_features(conn, settings, as_of, since=since)
    built_seconds = time.perf_counter() - started
    logs = load_logged_offers(conn, catalog, as_of, since=since)
    load_seconds = time.perf_counter() - started - built_seconds
    return fit_response_model_to_logs(
        logs,
        catalog,
        rules,
        as_of,
        holdout_fraction=holdout_fraction,
        seed=seed,
        config=config,
        prepared={"feature_dates_built": len(built), "build_seconds": built_seconds, "load_seconds": load_seconds},
    )


def ensure_point_in_time_features(
    conn: Connection, settings: Settings, as_of: date, *, since: date | None = None
) -> list[date]:
    """Build the features of every send date before `as_of` (from `since`) whose logged offers lack them.

    A send date is built when it has no feature rows at all: then every offer of that date has
    `has_features` false. A date with rows can still lack a user who had no events in the recency
    window; rebuilding would not add that user, so it is not rebuilt. (A date whose build found no
    user at all, the first day of a shop's data, is rebuilt each time: that build reads no events.)
    Consecutive missing dates are built as one range. Returns the dates built; commits.
    """
    rows = fetch_all(
        conn,
        _sql("missing_feature_dates"),
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


def _sql(name: str) -> str:
    """The text of sql/learning/<name>.sql."""
    return load_sql(package_dir("sql"), f"learning/{name}")


def _midnight(day: date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0, 0), tzinfo=dt.UTC)


_QUERY_SETTINGS = {"jit": "off", "work_mem": "256MB"}

_LOG_FEATURES = tuple(n for n in FEATURE_NAMES if not n.endswith("_consent") and n != "purchase_count")


def load_logged_offers(conn: Connection, catalog: Catalog, as_of: date, *, since: date | None = None) -> LoggedOffers:
    """Every offer in `recsys.v_logged_offers` sent before `as_of` 00:00 UTC (and from `since`), as
    arrays (one COPY)."""
    import pandas as pd

    with conn.cursor() as cur:
        cur.execute(_sql("logged_offer_outcomes"))
        view_columns = {r[0] for r in cur.fetchall()}
    outcome_columns = [c for c in ("opened", "clicked", "converted", "unsubscribed") if c in view_columns]
    # The view carries the features of the send date but not purchase_count: it comes from the same
    # user_features row. Consent: see fit_response_model.
    query = sql.SQL(_sql("logged_offers")).format(
        outcomes=sql.SQL(", ").join(
            sql.SQL("{}::int as {}").format(sql.Identifier("o", c), sql.Identifier(c)) for c in outcome_columns
        ),
        features=sql.SQL(", ").join(sql.Identifier("o", c) for c in _LOG_FEATURES),
    )
    params = {
        "before": _midnight(as_of),
        "after": None if since is None else _midnight(since),
        "types": list(catalog.offer_types),
        "channels": list(catalog.channels),
        "timings": list(catalog.timings),
    }
    buf = io.StringIO()
    with conn.cursor() as cur:
        # One wide join over every feature partition of the window: JIT compilation costs seconds
        # and wins nothing back; the sort by send date wants memory.
        for name, value in _QUERY_SETTINGS.items():
            cur.execute("select set_config(%s, %s, true)", (name, value))
        bound = cur.mogrify(query, params).decode()
        cur.copy_expert(f"copy ({bound}) to stdout with (format csv, header true)", buf)
    buf.seek(0)
    df = pd.read_csv(buf, dtype=np.float64)
    n = len(df)

    raw = np.zeros((n, N_FEATURES))
    for name in FEATURE_NAMES:
        raw[:, FEATURE_NAMES.index(name)] = df[name].to_numpy()
    has_features = df["has_features"].to_numpy() == 1
    in_catalog = df[["type_idx", "channel_idx", "timing_idx"]].notna().all(axis=1).to_numpy()
    usable = has_features & in_catalog
    raw[~has_features] = 0.0
    obs = normalise(np.nan_to_num(raw)).astype(np.float64)

    def idx(col: str) -> np.ndarray:
        return np.nan_to_num(df[col].to_numpy(), nan=0).astype(np.int64)

    send_day = df["send_day"].to_numpy()
    used_days = send_day[usable]
    epoch = date(1970, 1, 1)
    return LoggedOffers(
        user_id=df["user_id"].to_numpy().astype(np.int64),
        send_day=send_day.astype(np.int64),
        obs=obs,
        type_idx=idx("type_idx"),
        value=df["offer_value"].to_numpy(),
        channel_idx=idx("channel_idx"),
        timing_idx=idx("timing_idx"),
        outcomes={c: df[c].to_numpy() for c in outcome_columns},
        revenue=df["revenue"].to_numpy(),
        usable=usable,
        counts={
            "logged": n,
            "used": int(usable.sum()),
            "without_features": int((~has_features).sum()),
            "outside_catalog": int((has_features & ~in_catalog).sum()),
        },
        window={
            "first_send_date": (epoch + timedelta(days=int(used_days.min()))).isoformat() if len(used_days) else None,
            "last_send_date": (epoch + timedelta(days=int(used_days.max()))).isoformat() if len(used_days) else None,
        },
    )
