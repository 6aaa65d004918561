"""Upgrades: a database at the previous release's head, with data in it, migrated to today's head.

The previous release's `sql/` tree and the data it held are frozen under `tests/data/releases/`.
Each test builds that database, migrates it with today's `sql/`, and checks what users rely on: no
row lost, the same schema a fresh install gets, senders claiming and reporting on the old offers,
features and views answering. `RECSYS_TEST_UPGRADE_FROM=<release>` also runs the whole suite on a
session database that went through the same upgrade (see conftest.py; CI does it for the tests
of the migrated parts).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from upgrade_support import DATA_TABLES, PREVIOUS_RELEASE, RELEASES, build_release_database, sql_before

from recsys.config.settings import PROJECT_ROOT, load_settings
from recsys.data.features import build_features
from recsys.db import connect, fetch_all, fetch_value
from recsys.db.migrate import discover, migrate


def _counts(url: str) -> dict[str, int]:
    with connect(url) as conn:
        return {t: fetch_value(conn, f"select count(*) from recsys.{t}") for t in DATA_TABLES}  # noqa: S608


@pytest.fixture
def upgraded(empty_database_url: str) -> Iterator[tuple[str, dict[str, int], list[str]]]:
    """(url, row counts before the upgrade, migrations the upgrade applied)."""
    build_release_database(empty_database_url, PREVIOUS_RELEASE)
    before = _counts(empty_database_url)
    with connect(empty_database_url) as conn:
        result = migrate(conn, load_settings(env={}, database_url=empty_database_url))
    yield empty_database_url, before, result.applied


def test_the_upgrade_applies_only_the_new_migrations_and_keeps_every_row(upgraded) -> None:
    url, before, applied = upgraded
    old = {p.name for p in (RELEASES / PREVIOUS_RELEASE / "sql" / "migrations").glob("*.sql")}
    today = {f.path.name for f in discover(PROJECT_ROOT / "sql")[0]}
    assert old <= today, f"a released migration was removed or renamed: {sorted(old - today)}"
    assert applied == sorted(today - old)
    assert _counts(url) == before
    assert all(n > 0 for n in before.values()), before


def _schema(url: str) -> dict[str, list[tuple]]:
    with connect(url) as conn:
        columns = fetch_all(
            conn,
            """
            select c.relname, a.attname, format_type(a.atttypid, a.atttypmod) as type, a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid) as default_expr, col_description(c.oid, a.attnum) as comment
            from pg_class as c
            join pg_namespace as n on n.oid = c.relnamespace
            join pg_attribute as a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
            left join pg_attrdef as d on d.adrelid = c.oid and d.adnum = a.attnum
            where n.nspname = 'recsys' and c.relkind in ('r', 'p', 'v') and not c.relispartition
              and c.relname <> 'schema_migrations'
            order by 1, 2
            """,
        )
        functions = fetch_all(
            conn,
            """
            select p.proname, pg_get_function_identity_arguments(p.oid) as args, md5(p.prosrc) as body
            from pg_proc as p join pg_namespace as n on n.oid = p.pronamespace
            where n.nspname = 'recsys' order by 1, 2
            """,
        )
        constraints = fetch_all(
            conn,
            """
            select c.relname, pg_get_constraintdef(k.oid) as definition
            from pg_constraint as k
            join pg_class as c on c.oid = k.conrelid
            join pg_namespace as n on n.oid = c.relnamespace
            where n.nspname = 'recsys' and not c.relispartition
            order by 1, 2
            """,
        )
        # user triggers (not the internal ones behind foreign keys) and indexes of the tables
        # themselves: a partition's copies follow its parent's
        triggers = fetch_all(
            conn,
            """
            select c.relname, t.tgname, pg_get_triggerdef(t.oid) as definition
            from pg_trigger as t
            join pg_class as c on c.oid = t.tgrelid
            join pg_namespace as n on n.oid = c.relnamespace
            where n.nspname = 'recsys' and not t.tgisinternal and not c.relispartition
            order by 1, 2
            """,
        )
        indexes = fetch_all(
            conn,
            """
            select i.tablename, i.indexname, i.indexdef
            from pg_indexes as i
            join pg_namespace as n on n.nspname = i.schemaname
            join pg_class as c on c.relnamespace = n.oid and c.relname = i.tablename
            where i.schemaname = 'recsys' and not c.relispartition and i.tablename <> 'schema_migrations'
            order by 1, 2
            """,
        )
    return {
        "columns": [tuple(r.values()) for r in columns],
        "functions": [tuple(r.values()) for r in functions],
        "constraints": [tuple(r.values()) for r in constraints],
        "triggers": [tuple(r.values()) for r in triggers],
        "indexes": [tuple(r.values()) for r in indexes],
    }


def test_an_upgraded_database_has_the_schema_of_a_fresh_install(upgraded, migrated_url: str) -> None:
    url, _, _ = upgraded
    got, want = _schema(url), _schema(migrated_url)
    for part in ("columns", "functions", "constraints", "triggers", "indexes"):
        missing = sorted(set(want[part]) - set(got[part]))
        extra = sorted(set(got[part]) - set(want[part]))
        assert not missing and not extra, f"{part}: missing after upgrade {missing[:5]}, only after upgrade {extra[:5]}"


def test_senders_claim_and_report_on_offers_written_before_the_upgrade(upgraded) -> None:
    url, _, _ = upgraded
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute("select offer_id from recsys.claim_offers('email', 'new-worker', 10, interval '5 minutes')")
        claimed = sorted(r[0] for r in cur.fetchall())
        # 101 was due and never claimed; 102's sender died and its lease ran out; 103 was sent
        assert claimed == [101, 102]
        cur.execute("select recsys.ack_offer(101, 'new-worker')")
        cur.execute("select recsys.record_offer_event(101, 'delivered', now(), null)")
        cur.execute("select recsys.record_offer_event(103, 'clicked', now(), null)")
        cur.execute("select recsys.record_offer_event(103, 'converted', now(), 42)")
    with connect(url) as conn:
        assert fetch_value(conn, "select status from recsys.campaign_offers where offer_id = 101") == "sent"
        events = fetch_all(conn, "select event from recsys.offer_events where offer_id = 103 order by event")
    assert [e["event"] for e in events] == ["clicked", "converted", "delivered", "opened"]


def test_features_and_analyst_views_answer_on_upgraded_data(upgraded, tmp_path: Path) -> None:
    url, _, _ = upgraded
    settings = load_settings(env={}, database_url=url, data_dir=tmp_path)
    today = dt.datetime.now(dt.UTC).date()
    with connect(url) as conn:
        built = build_features(conn, settings, today)
    assert built.users == 4
    with connect(url) as conn:
        summary = fetch_all(conn, "select * from recsys.v_campaign_summary where run_id = 'night-1'")
        leaderboard = fetch_all(conn, "select model_version from recsys.v_model_leaderboard")
        logged = fetch_value(conn, "select count(*) from recsys.v_logged_offers")
    assert sum(int(r["offers"]) for r in summary) == 3
    assert [r["model_version"] for r in leaderboard] == ["m-010"]
    assert logged >= 2  # the two past campaigns from files, at least


def test_migration_010_upgrades_a_registry_at_the_previous_head(empty_database_url: str, tmp_path: Path) -> None:
    """A database at head 009 with a registered PPO champion: 010 admits rule heuristic rows (training
    mode `baseline`, no artifact), keeps every model, and refuses a rule row carrying weights."""

    import psycopg2

    from recsys.config.catalog import load_catalog
    from recsys.evaluation.registry import champion, load_policy, record_decision, register, rule_heuristic_record

    # head 009: none of the later migrations that build on it
    later = ("010_rule_heuristic_models.sql", "011_campaign_decisions.sql", "012_exploration_source.sql")
    previous = sql_before(tmp_path / "sql", *later, "014_campaign_decisions_partitions.sql")
    build_release_database(empty_database_url, PREVIOUS_RELEASE)
    with connect(empty_database_url) as conn:
        migrate(conn, load_settings(env={}, database_url=empty_database_url, sql_dir=previous))
    catalog = load_catalog()
    rule = rule_heuristic_record(catalog, as_of=dt.date(2026, 12, 1), response_model={})
    with connect(empty_database_url) as conn, pytest.raises(psycopg2.errors.CheckViolation):
        register(conn, rule)  # at 009 the registry has no room for it
    before = _counts(empty_database_url)
    with connect(empty_database_url) as conn:
        applied = migrate(conn, load_settings(env={}, database_url=empty_database_url)).applied
    assert applied == [*later, "014_campaign_decisions_partitions.sql"]
    assert _counts(empty_database_url) == before
    with connect(empty_database_url) as conn:
        assert champion(conn).model_version == "m-010"  # the old champion, untouched
        register(conn, rule)
        record_decision(conn, rule.model_version, decision="bootstrap", reasons=[], evaluation={})
        conn.commit()
        current = champion(conn)
        assert (current.model_version, current.training_mode, current.artifact) == (rule.model_version, "baseline", b"")
        assert load_policy(current, catalog).name == rule.model_version
        comment = fetch_value(
            conn, "select col_description('recsys.policy_models'::regclass, 3)"
        )  # the algorithm column
        assert "rule_heuristic" in comment
        with pytest.raises(psycopg2.errors.CheckViolation, match="policy_models_rule_heuristic_check"):
            register(conn, dataclasses.replace(rule, model_version="rule-2", total_timesteps=10))


def test_migration_013_adds_the_prior_features_to_feature_dates_built_before(
    empty_database_url: str, tmp_path: Path
) -> None:
    """A database at the head before 013 holding two feature dates that the released feature query
    built: 013 keeps every row and value, the new columns hold null, and the backfill fills them."""
    from psycopg2 import sql

    from recsys.data.features import FEATURE_COLUMNS, PRIOR_FEATURE_COLUMNS, backfill_features
    from recsys.db.sqlfiles import load_sql

    previous = sql_before(tmp_path / "sql", "013_prior_shrunk_features.sql")
    (previous / "functions" / "45_feature_priors.sql").unlink()
    build_release_database(empty_database_url, PREVIOUS_RELEASE)
    release = load_settings(env={}, database_url=empty_database_url, sql_dir=RELEASES / PREVIOUS_RELEASE / "sql")
    today = dt.datetime.now(dt.UTC).date()
    dates = [today - dt.timedelta(days=1), today]
    with connect(empty_database_url) as conn:
        with conn.cursor() as cur:  # the features as the release built them, one partition per date
            for day in dates:
                part = sql.Identifier("recsys", f"user_features_{day:%Y%m%d}")
                cur.execute(
                    sql.SQL("create table {} partition of recsys.user_features for values in (%s)").format(part),
                    (day,),
                )
                cur.execute(
                    sql.SQL("insert into recsys.user_features ") + sql.SQL(load_sql(release, "features/user_features")),
                    {"as_of": day, "window_days": 90, "recency_cap_days": 365, "attribution_days": 3},
                )
        conn.commit()
        migrate(conn, load_settings(env={}, database_url=empty_database_url, sql_dir=previous))
        before = fetch_all(conn, "select * from recsys.user_features order by as_of, user_id")
    assert len(before) >= 8 and set(before[0]) == set(FEATURE_COLUMNS)

    settings = load_settings(env={}, database_url=empty_database_url, data_dir=tmp_path)
    with connect(empty_database_url) as conn:
        assert migrate(conn, settings).applied == ["013_prior_shrunk_features.sql"]
        after = fetch_all(conn, "select * from recsys.user_features order by as_of, user_id")
    assert [{c: r[c] for c in FEATURE_COLUMNS} for r in after] == before
    assert all(r[c] is None for r in after for c in PRIOR_FEATURE_COLUMNS)

    with connect(empty_database_url) as conn:
        built = backfill_features(conn, settings)
        assert [b.as_of for b in built] == dates
        filled = fetch_all(conn, "select * from recsys.user_features order by as_of, user_id")
        assert backfill_features(conn, settings) == []
    assert [(r["as_of"], r["user_id"]) for r in filled] == [(r["as_of"], r["user_id"]) for r in before]
    assert all(r["email_open_rate"] is not None and r["order_value"] is not None for r in filled)


def test_migration_012_describes_the_explorer_and_keeps_every_offer(empty_database_url: str, tmp_path: Path) -> None:
    """A database at the head before 012, with the previous release's offers in it: 012 changes the
    comments on is_exploration, propensity and the run settings only; every row stays."""
    import shutil

    previous = tmp_path / "sql"
    shutil.copytree(PROJECT_ROOT / "sql", previous)
    (previous / "migrations" / "012_exploration_source.sql").unlink()
    build_release_database(empty_database_url, PREVIOUS_RELEASE)
    with connect(empty_database_url) as conn:
        migrate(conn, load_settings(env={}, database_url=empty_database_url, sql_dir=previous))
    before = _counts(empty_database_url)
    assert before["campaign_offers"] > 0
    with connect(empty_database_url) as conn:
        applied = migrate(conn, load_settings(env={}, database_url=empty_database_url)).applied
        comment = fetch_value(
            conn,
            "select col_description('recsys.campaign_offers'::regclass, attnum) from pg_attribute "
            "where attrelid = 'recsys.campaign_offers'::regclass and attname = 'is_exploration'",
        )
    assert applied == ["012_exploration_source.sql"]
    assert _counts(empty_database_url) == before
    assert "explorer" in comment and comment.startswith("The offer came from the exploration draw (a hash")


def test_migration_014_partitions_the_decisions_and_keeps_every_row(empty_database_url: str, tmp_path: Path) -> None:
    """A database at the head before 014, with today's views over campaign_decisions and decisions of
    two nights in it: 014 moves every row into a partition per night, the views answer again in the
    same migrate, and retention then drops a night's partition."""
    import shutil

    previous = tmp_path / "sql"
    shutil.copytree(PROJECT_ROOT / "sql", previous)
    (previous / "migrations" / "014_campaign_decisions_partitions.sql").unlink()
    build_release_database(empty_database_url, PREVIOUS_RELEASE)
    nights = [dt.date(2026, 11, 30), dt.date(2026, 12, 1)]
    with connect(empty_database_url) as conn:
        migrate(conn, load_settings(env={}, database_url=empty_database_url, sql_dir=previous))
        with conn.cursor() as cur:
            cur.execute(
                "insert into recsys.campaign_decisions (campaign_date, run_id, user_id, decision, action_id,"
                " propensity, is_exploration, model_version, features_date, skip_reason, segment)"
                " select d, 'run-' || d, u, (array['offer', 'rest', 'holdout', 'skipped'])[1 + u %% 4],"
                " case when u %% 4 <> 3 then u %% 109 end, case when u %% 4 <> 3 then 0.5 end, u %% 5 = 0, 'm-1', d,"
                " case when u %% 4 = 3 then 'cooldown' end, 'loyal'"
                " from unnest(%s::date[]) as d, generate_series(1, 50) as u",
                (nights,),
            )
        conn.commit()
        before = fetch_all(conn, "select * from recsys.campaign_decisions order by campaign_date, user_id")
    assert len(before) == 100

    with connect(empty_database_url) as conn:
        result = migrate(conn, load_settings(env={}, database_url=empty_database_url))
        after = fetch_all(conn, "select * from recsys.campaign_decisions order by campaign_date, user_id")
        kind = fetch_value(conn, "select relkind from pg_class where oid = 'recsys.campaign_decisions'::regclass")
        parts = fetch_all(
            conn,
            "select c.relname, pg_get_expr(c.relpartbound, c.oid) as bound from pg_inherits as i"
            " join pg_class as c on c.oid = i.inhrelid"
            " where i.inhparent = 'recsys.campaign_decisions'::regclass order by 1",
        )
        summary = fetch_value(conn, "select count(*) from recsys.v_campaign_summary")
        logged = fetch_value(conn, "select count(*) from recsys.v_logged_offers")
        leftover = fetch_value(conn, "select to_regclass('recsys.campaign_decisions_013')")
    assert result.applied == ["014_campaign_decisions_partitions.sql"]
    assert "views/40_v_campaign_summary.sql" in result.reapplied
    assert after == before
    assert kind == "p" and leftover is None
    assert [p["relname"] for p in parts] == ["campaign_decisions_20261130", "campaign_decisions_20261201"]
    assert parts[0]["bound"] == "FOR VALUES FROM ('2026-11-30') TO ('2026-12-01')"
    assert summary >= 0 and logged >= 0  # the re-created views answer

    with connect(empty_database_url) as conn:
        fetch_value(conn, "select recsys.drop_campaign_partitions_before(%s)", (nights[1],))
        left = fetch_all(conn, "select distinct campaign_date from recsys.campaign_decisions")
        gone = fetch_value(conn, "select to_regclass('recsys.campaign_decisions_20261130')")
    assert [r["campaign_date"] for r in left] == [nights[1]] and gone is None


def test_migration_015_keeps_every_row_and_shards_new_dates_by_hash(empty_database_url: str, tmp_path: Path) -> None:
    """A database at the head before 015 with the previous release's campaigns in it: 015 keeps every
    row, the date-partition helpers answer as before when called with a date alone, a date created
    for a sharded run is sub-partitioned by hash of user_id, and a user's shard is its remainder."""
    previous = sql_before(tmp_path / "sql", "015_campaign_shard_partitions.sql")
    build_release_database(empty_database_url, PREVIOUS_RELEASE)
    with connect(empty_database_url) as conn:
        migrate(conn, load_settings(env={}, database_url=empty_database_url, sql_dir=previous))
    before = _counts(empty_database_url)
    with connect(empty_database_url) as conn:
        assert migrate(conn, load_settings(env={}, database_url=empty_database_url)).applied == [
            "015_campaign_shard_partitions.sql"
        ]
        assert _counts(empty_database_url) == before
        day = dt.date(2035, 1, 1)
        assert fetch_value(conn, "select recsys.ensure_campaign_partition(%s)", (day,)) is True
        assert fetch_value(conn, "select recsys.ensure_campaign_partition(%s)", (day,)) is False
        assert fetch_value(conn, "select recsys.ensure_decisions_partition(%s, 2)", (day + dt.timedelta(days=1),))
        strategies = fetch_all(
            conn,
            "select c.relname, coalesce(p.partstrat, '-') as strategy from pg_class as c"
            " left join pg_partitioned_table as p on p.partrelid = c.oid"
            " where c.relname in ('campaign_offers_20350101', 'campaign_decisions_20350102') order by 1",
        )
        assert [r["strategy"] for r in strategies] == ["h", "-"]
        shards = fetch_all(
            conn,
            "select u, recsys.campaign_shard(u, 3) as k,"
            " (select count(*) from generate_series(0, 2) as s where recsys.in_campaign_shard(u, 3, s)) as member_of"
            " from generate_series(1::bigint, 300) as u",
        )
    assert all(r["member_of"] == 1 for r in shards)
    sizes = [sum(r["k"] == k for r in shards) for k in range(3)]
    assert sum(sizes) == 300 and min(sizes) > 60  # every user in exactly one shard, the shards balanced
