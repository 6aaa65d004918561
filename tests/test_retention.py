"""Retention drops whole old partitions only, for events and features."""

from __future__ import annotations

import datetime as dt

from recsys.config import load_config
from recsys.config.settings import Settings, load_settings
from recsys.data.features import build_features
from recsys.data.retention import apply_retention
from recsys.db import Connection, fetch_all


def _partitions(conn: Connection, parent: str) -> list[str]:
    rows = fetch_all(
        conn,
        "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
        "where i.inhparent = %s::regclass order by 1",
        (f"recsys.{parent}",),
    )
    return [r["relname"] for r in rows]


def test_retention_drops_only_what_is_wholly_older(db: Connection, settings: Settings) -> None:
    with db.cursor() as cur:
        cur.execute("select recsys.ensure_event_partitions('2026-01-15', '2026-04-15')")
        cur.execute(
            "insert into recsys.behavior_events (event_id, user_id, session_id, event_at, action, load_id) values "
            "('a', 1, 's', '2026-01-20', 'view', 0), ('b', 1, 's', '2026-03-31 23:59', 'view', 0), "
            "('c', 1, 's', '2026-04-02', 'view', 0)"
        )
    db.commit()
    for day in (dt.date(2026, 4, 1), dt.date(2026, 4, 10), dt.date(2026, 4, 20)):
        build_features(db, settings, day)
    # events kept 40 days back from 2026-05-01 -> cutoff 2026-03-22: January and February go,
    # March stays (it holds events after the cutoff); features kept 15 days -> cutoff 2026-04-16.
    short = load_settings(
        env={}, database_url=settings.database_url, event_retention_days=40, feature_retention_days=15
    )
    # (other tests may have left partitions of their own: expectations are computed from the list)
    events_before = _partitions(db, "behavior_events")
    features_before = _partitions(db, "user_features")
    result = apply_retention(db, short, load_config(short.config).rules, dt.date(2026, 5, 1))
    events_after = _partitions(db, "behavior_events")
    features_after = _partitions(db, "user_features")
    remaining = [r["event_id"] for r in fetch_all(db, "select event_id from recsys.behavior_events order by 1")]

    def month_end(name: str) -> dt.date:
        y, m = int(name[-6:-2]), int(name[-2:])
        return dt.date(y + m // 12, m % 12 + 1, 1)

    expected_events = {p for p in events_before if month_end(p) <= dt.date(2026, 3, 22)}
    expected_features = {
        p for p in features_before if dt.datetime.strptime(p[-8:], "%Y%m%d").date() < dt.date(2026, 4, 16)
    }
    assert {"behavior_events_202601", "behavior_events_202602"} <= expected_events
    assert set(events_before) - set(events_after) == expected_events
    assert {"behavior_events_202603", "behavior_events_202604"} <= set(events_after)
    assert remaining == ["b", "c"]
    assert result.event_partitions == len(expected_events)
    assert {"user_features_20260401", "user_features_20260410"} <= expected_features
    assert set(features_before) - set(features_after) == expected_features
    assert "user_features_20260420" in features_after
    assert result.feature_partitions == len(expected_features)
