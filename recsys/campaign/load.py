"""Campaign load: the users to score for a date (or a shard of it) and the model to score them with.

`score_campaign` (recsys.campaign.score) calls `load_users` for one COPY BINARY of every user with
features as of the campaign date, with consent, recent offers and conversions computed in SQL (as
`Users`: one float32 feature matrix and int32 eligibility inputs), and `resolve_model` for the
model version.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from psycopg2 import sql

from recsys.campaign.pgcopy import PGCOPY_HEADER
from recsys.campaign.queries import campaign_sql, composed
from recsys.config.features import PRIOR_SHRUNK_FEATURES
from recsys.config.rules import CampaignRules
from recsys.db import Connection, fetch_all, fetch_value
from recsys.errors import RecsysError
from recsys.evaluation.registry import get_model, require_champion
from recsys.model.observation import CONSENT_FEATURES, FEATURE_NAMES, STORED_FEATURES

PRIOR_SHRUNK_NAMES = frozenset(name for name, _, _ in PRIOR_SHRUNK_FEATURES)

_LOAD_INTS = ("ok_email", "ok_sms", "ok_push", "active", "cooldown", "n_total", "n_email", "n_sms", "n_push")


@dataclass
class Users:
    """The users a campaign load read, in user_id order: ids, raw features, eligibility inputs.

    `features` is one float32 (n, N_FEATURES) matrix in FEATURE_NAMES order, column-major (each
    feature's values contiguous, so normalising a column in place is one pass); the eligibility
    inputs (consent flags with an address, activity, cooldown, recent offer counts, the category
    and segment codes) are int32 arrays by name (`users["ok_email"]`).
    """

    user_ids: np.ndarray
    """int64 (n,), ascending."""
    features: np.ndarray
    """float32 (n, N_FEATURES), FEATURE_NAMES order, as stored (not normalised)."""
    inputs: dict[str, np.ndarray]
    """int32 (n,) per eligibility input: ok_email, ok_sms, ok_push, active, cooldown, n_total,
    n_email, n_sms, n_push, category_code, segment_code."""
    categories: list[str]
    """The date's categories, sorted: code k (1-based) names categories[k - 1]."""
    segments: list[str]
    """The date's segments, sorted: code k (1-based) names segments[k - 1]."""

    def __len__(self) -> int:
        return len(self.user_ids)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.inputs[name]

    def pop_features(self) -> np.ndarray:
        """`features`, handed over to the caller (who may overwrite it) and no longer held here."""
        features, self.features = self.features, np.empty((0, self.features.shape[1]), dtype=np.float32)
        return features

    def top_category(self, rows: np.ndarray) -> np.ndarray:
        """object (len(rows),): the top category's name of each of those users."""
        return np.array(["", *self.categories], dtype=object)[self.inputs["category_code"][rows]]


@dataclass(frozen=True)
class DateCodes:
    """The date's categories and segments, sorted: the codes the campaign load reads them as."""

    categories: list[str]
    segments: list[str]

    @property
    def longest_categories(self) -> list[str]:
        """[the longest category name] (the templates are checked with it), or [] when none."""
        return [max(self.categories, key=len)] if self.categories else []


def date_codes(conn: Connection, sql_dir: Path, campaign_date: dt.date) -> DateCodes:
    """The date's categories and segments, in one pass over its features."""
    pairs = fetch_all(conn, campaign_sql(sql_dir, "load_category_pairs"), {"day": campaign_date})
    return DateCodes(sorted({r["top_category"] for r in pairs}), sorted({r["segment"] for r in pairs}))


def load_users(
    conn: Connection,
    sql_dir: Path,
    campaign_date: dt.date,
    rules: CampaignRules,
    shard: int,
    shards: int,
    codes: DateCodes | None = None,
) -> Users:
    """Every user with features as of the date (in the shard), with eligibility inputs.

    One COPY BINARY of fixed-width, non-null fields (the category as a code into the date's sorted
    categories, `codes`, read here when not given), read by one numpy structured array: no text
    parsing of a million rows. Each field is copied once, in user order, into its place in `Users`
    (no DataFrame: a million users' 39 features are one 156 MB float32 matrix), and the COPY's bytes
    are released before returning.
    """
    codes = codes or date_codes(conn, sql_dir, campaign_date)
    categories, segments = codes.categories, codes.segments
    # features stored as double travel as real: half the bytes, and float32 is what the policy reads
    # (the prior-shrunk ones are null on a date built before migration 013: NaN keeps the row's
    # layout fixed, and scoring refuses such a date to a model that reads them)
    features = sql.SQL(", ").join(
        sql.SQL("coalesce({}, 'NaN')::real" if n in PRIOR_SHRUNK_NAMES else "{}::real").format(sql.Identifier("f", n))
        for n in STORED_FEATURES
    )
    query = composed(sql_dir, "load_users", features=features)
    params = {
        "day": campaign_date,
        "cap_from": campaign_date - dt.timedelta(days=rules.cap_window_days),
        "cool_from": campaign_date - dt.timedelta(days=rules.cooldown_days),
        "active_days": rules.active_window_days,
        "shards": shards,
        "shard": shard,
        "categories": categories,
        "segments": segments,
    }
    buffer = io.BytesIO()
    with conn.cursor() as cur:
        # On 2 busy cores, parallel workers funnelling a million wide rows through a Gather cost more
        # than they save; the hashes stay in memory. (Rows come unordered: numpy sorts them below.)
        cur.execute("set local max_parallel_workers_per_gather = 0; set local work_mem = '256MB'")
        cur.copy_expert(cur.mogrify(query, params).decode(), buffer)
    inputs = (*_LOAD_INTS, "category_code", "segment_code")
    fields: list[tuple[str, str]] = [("count", ">i2"), ("len_user_id", ">i4"), ("user_id", ">i8")]
    kinds = {n: ">f4" for n in STORED_FEATURES}
    kinds.update({n: ">i4" for n in (*CONSENT_FEATURES, *inputs)})
    for name, kind in kinds.items():
        fields += [(f"len_{name}", ">i4"), (name, kind)]
    layout = np.dtype(fields)
    data = buffer.getbuffer()
    body = len(data) - len(PGCOPY_HEADER) - 2  # the header and the -1 trailer
    if body % layout.itemsize or bytes(data[: len(PGCOPY_HEADER)]) != PGCOPY_HEADER:
        raise RecsysError(f"campaign load of {campaign_date}: unexpected COPY BINARY layout ({len(data)} bytes)")
    rows = np.frombuffer(data, dtype=layout, count=body // layout.itemsize, offset=len(PGCOPY_HEADER))
    if len(rows) and (rows["count"] != len(kinds) + 1).any():
        raise RecsysError(f"campaign load of {campaign_date}: unexpected field count in COPY BINARY rows")
    order = np.argsort(rows["user_id"], kind="stable")  # by user_id, as before
    user_ids = rows["user_id"][order].astype(np.int64)
    # each field read in the COPY's order (a strided pass), then put in user order within its own
    # few MB: three times faster than gathering from the whole buffer in user order
    raw = np.empty((len(order), len(FEATURE_NAMES)), dtype=np.float32, order="F")
    for j, name in enumerate(FEATURE_NAMES):  # the consent flags (0 / 1) are exact in float32
        np.take(rows[name].astype(np.float32), order, out=raw[:, j])
    values = {name: rows[name].astype(np.int32)[order] for name in inputs}
    del rows, data, buffer  # the COPY's bytes go before the caller allocates more
    if (values["category_code"] == 0).any() or (values["segment_code"] == 0).any():
        raise RecsysError(f"the features as of {campaign_date} changed during the campaign load: score again")
    # code k (1-based) names categories[k - 1] / segments[k - 1]; the write joins them back in SQL
    return Users(user_ids, raw, values, list(categories), list(segments))


def resolve_model(
    conn: Connection, sql_dir: Path, run_id: str, campaign_date: dt.date, model_version: str | None
) -> str:
    """--model, else the run's model, else the date's last recorded model, else the champion."""
    if model_version:
        return get_model(conn, model_version).model_version
    recorded = fetch_value(conn, campaign_sql(sql_dir, "resolve_run_model"), {"run_id": run_id})
    if recorded:
        return recorded
    recorded = fetch_value(conn, campaign_sql(sql_dir, "resolve_date_model"), {"day": campaign_date})
    if recorded:
        return recorded
    return require_champion(conn).model_version
