"""`recsys db migrate`: versioned files once each, repeatable files on change, roles, locking."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import psycopg2
import pytest

from recsys.config.settings import PROJECT_ROOT, load_settings
from recsys.db import connect, fetch_all, fetch_value
from recsys.db.migrate import discover, migrate
from recsys.errors import MigrationError


@pytest.fixture
def sql_copy(tmp_path: Path) -> Path:
    """A private copy of sql/ that a test may change."""
    target = tmp_path / "sql"
    shutil.copytree(PROJECT_ROOT / "sql", target)
    return target


def _settings(url: str, sql_dir: Path | None = None, **kw: object):
    return load_settings(env={}, database_url=url, sql_dir=sql_dir, **kw)


def test_fresh_database_gets_every_file_once_then_nothing(empty_database_url: str) -> None:
    settings = _settings(empty_database_url)
    versioned, repeatable = discover(settings.sql_dir)
    with connect(empty_database_url) as conn:
        first = migrate(conn, settings)
    with connect(empty_database_url) as conn:
        second = migrate(conn, settings)
        recorded = fetch_all(conn, "select version, kind from recsys.schema_migrations order by version")
    assert first.applied == [f.path.name for f in versioned]
    assert sorted(first.reapplied) == sorted(f.label for f in repeatable)
    assert second.applied == [] and second.reapplied == []
    assert second.summary() == "schema is up to date"
    assert [r["version"] for r in recorded if r["kind"] == "versioned"] == [f.version for f in versioned]
    assert len([r for r in recorded if r["kind"] == "repeatable"]) == len(repeatable)


def test_contract_tables_and_columns_carry_comments(migrated_url: str) -> None:
    with connect(migrated_url) as conn:
        uncommented = fetch_all(
            conn,
            """
            select c.relname as table_name, a.attname as column_name
            from pg_class as c
            join pg_namespace as n on n.oid = c.relnamespace
            join pg_attribute as a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
            where n.nspname = 'recsys' and c.relkind in ('r', 'p') and not c.relispartition
              and c.relname <> 'schema_migrations'
              and col_description(c.oid, a.attnum) is null
            """,
        )
        tables_without = fetch_all(
            conn,
            """
            select c.relname from pg_class as c join pg_namespace as n on n.oid = c.relnamespace
            where n.nspname = 'recsys' and c.relkind in ('r', 'p', 'v') and not c.relispartition
              and obj_description(c.oid, 'pg_class') is null
            """,
        )
    assert uncommented == []
    assert tables_without == []


def test_changed_versioned_file_is_refused_and_nothing_changes(empty_database_url: str, sql_copy: Path) -> None:
    settings = _settings(empty_database_url, sql_copy)
    with connect(empty_database_url) as conn:
        migrate(conn, settings)
    first = sorted((sql_copy / "migrations").glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after release\n")
    (sql_copy / "migrations" / "998_extra.sql").write_text("create table recsys.should_not_exist (x int);\n")
    with pytest.raises(MigrationError, match=rf"migrations/{first.name} was changed after it was applied"):
        with connect(empty_database_url) as conn:
            migrate(conn, settings)
    with connect(empty_database_url) as conn:
        assert fetch_value(conn, "select to_regclass('recsys.should_not_exist')") is None


def test_changed_view_file_is_reapplied(empty_database_url: str, sql_copy: Path) -> None:
    settings = _settings(empty_database_url, sql_copy)
    with connect(empty_database_url) as conn:
        migrate(conn, settings)
    view = sql_copy / "views" / "10_v_offer_log.sql"
    view.write_text(view.read_text().replace("'Every logged offer", "'changed: Every logged offer"))
    with connect(empty_database_url) as conn:
        result = migrate(conn, settings)
        comment = fetch_value(conn, "select obj_description('recsys.v_offer_log'::regclass, 'pg_class')")
    assert result.applied == []
    assert "views/10_v_offer_log.sql" in result.reapplied
    assert comment.startswith("changed")


def test_failing_migration_names_the_file_and_rolls_back(empty_database_url: str, sql_copy: Path) -> None:
    settings = _settings(empty_database_url, sql_copy)
    (sql_copy / "migrations" / "999_broken.sql").write_text(
        "create table recsys.half_done (x int);\nselect no_such_function();\n"
    )
    with pytest.raises(MigrationError, match=r"migrations/999_broken.sql failed: .*no_such_function"):
        with connect(empty_database_url) as conn:
            migrate(conn, settings)
    with connect(empty_database_url) as conn:
        # one transaction: not even 001 or the bookkeeping table survived
        assert fetch_value(conn, "select to_regclass('recsys.schema_migrations')") is None
        assert fetch_value(conn, "select to_regclass('recsys.behavior_events')") is None


def test_badly_named_migration_is_refused(sql_copy: Path, empty_database_url: str) -> None:
    (sql_copy / "migrations" / "2_oops.sql").write_text("select 1;\n")
    with pytest.raises(MigrationError, match=r"2_oops\.sql: migration files are named NNN_"):
        discover(sql_copy)


def test_concurrent_migrations_apply_each_file_once(empty_database_url: str) -> None:
    settings = _settings(empty_database_url)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with connect(empty_database_url) as conn:
                migrate(conn, settings)
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with connect(empty_database_url) as conn:
        rows = fetch_value(conn, "select count(*) from recsys.schema_migrations where kind = 'versioned'")
    assert rows == len(discover(settings.sql_dir)[0])


def test_roles_are_created_with_configured_names_and_least_privilege(empty_database_url: str) -> None:
    settings = _settings(empty_database_url, sender_role="shop_sender_test", analyst_role="shop_analyst_test")
    for _ in range(2):  # idempotent
        with connect(empty_database_url) as conn:
            migrate(conn, settings)
    with connect(empty_database_url) as conn:
        roles = {r["rolname"] for r in fetch_all(conn, "select rolname from pg_roles where rolname like 'shop_%%'")}
        analyst_reads_view = fetch_value(
            conn, "select has_table_privilege('shop_analyst_test', 'recsys.v_logged_offers', 'select')"
        )
        analyst_reads_table = fetch_value(
            conn, "select has_table_privilege('shop_analyst_test', 'recsys.users', 'select')"
        )
        sender_reads_table = fetch_value(
            conn, "select has_table_privilege('shop_sender_test', 'recsys.users', 'select')"
        )
    assert {"shop_sender_test", "shop_analyst_test"} <= roles
    assert analyst_reads_view is True
    assert analyst_reads_table is False
    assert sender_reads_table is False


def test_bad_role_name_is_a_clear_config_error() -> None:
    from recsys.errors import ConfigError

    with pytest.raises(ConfigError, match="not a plain lower-case PostgreSQL identifier"):
        load_settings(env={"RECSYS_SENDER_ROLE": "Robert'); drop table users;--"})


def test_unreachable_server_is_a_clear_error() -> None:
    from recsys.errors import RecsysError

    with pytest.raises(RecsysError, match="cannot connect to PostgreSQL"):
        with connect("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"):
            pass


def test_psycopg2_is_the_connection_driver(migrated_url: str) -> None:
    with connect(migrated_url) as conn:
        assert isinstance(conn, psycopg2.extensions.connection)
        assert fetch_value(conn, "show timezone") == "UTC"


def test_the_configured_attribution_window_reaches_every_new_session(empty_database_url: str) -> None:
    import datetime as dt

    def window() -> dt.timedelta:
        with connect(empty_database_url) as conn:  # a new session, as an analyst's or a sender's
            return fetch_value(conn, "select recsys.attribution_window()")

    def stored() -> int:
        with connect(empty_database_url) as conn:
            return fetch_value(
                conn,
                "select count(*) from pg_db_role_setting as s join pg_database as d on d.oid = s.setdatabase,"
                " unnest(s.setconfig) as c"
                " where d.datname = current_database() and c like 'recsys.attribution_days=%%'",
            )

    with connect(empty_database_url) as conn:
        migrate(conn, _settings(empty_database_url))
    assert window() == dt.timedelta(days=3) and stored() == 0  # the default needs nothing stored
    with connect(empty_database_url) as conn:
        migrate(conn, _settings(empty_database_url, attribution_days=5))
        assert fetch_value(conn, "select recsys.attribution_window()") == dt.timedelta(days=5)  # at once
    assert window() == dt.timedelta(days=5) and stored() == 1
    with connect(empty_database_url) as conn:
        with conn.cursor() as cur:
            cur.execute("set recsys.attribution_days = 7")  # a session may look with another window
        assert fetch_value(conn, "select recsys.attribution_window()") == dt.timedelta(days=7)
    with connect(empty_database_url) as conn:
        migrate(conn, _settings(empty_database_url, attribution_days=3))
    assert window() == dt.timedelta(days=3)
