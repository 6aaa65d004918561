"""Schema migrations: `recsys db migrate`.

Versioned files `sql/migrations/NNN_name.sql` are applied in order, each once, and recorded with
their sha256 in `recsys.schema_migrations`; an applied file whose content changed is refused.
Repeatable files (`sql/functions/*.sql`, then `sql/views/*.sql`, by name) hold functions and views:
when any of them is new or changed, or a versioned migration was applied (it may rebuild a table
the views read, dropping them first), all of them are re-applied in order, so views that depend on
each other are rebuilt together. Roles are created idempotently and granted what they need.
Everything runs in one transaction under an advisory lock, so concurrent calls are safe and a
failed migration leaves the database as it was.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from recsys.config.settings import Settings
from recsys.db import Connection, fetch_all
from recsys.errors import MigrationError

log = logging.getLogger(__name__)

MIGRATION_LOCK_KEY = 7_301_958_224_001  # arbitrary, fixed: "recsys migrate"
REPEATABLE_DIRS = ("functions", "views")
# The sender protocol (sql/functions/30_sender_protocol.sql, contract section 3).
SENDER_FUNCTIONS = (
    "recsys.claim_offers(text, text, integer, interval)",
    "recsys.ack_offer(bigint, text)",
    "recsys.fail_offer(bigint, text, text, interval)",
    "recsys.release_offer(bigint, text, interval, text)",
    "recsys.record_offer_event(bigint, text, timestamptz, numeric)",
)
_VERSIONED = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class SqlFile:
    version: str
    path: Path
    kind: str  # "versioned" or "repeatable"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


@dataclass(frozen=True)
class MigrateResult:
    applied: list[str]
    reapplied: list[str]

    def summary(self) -> str:
        if not self.applied and not self.reapplied:
            return "schema is up to date"
        parts = []
        if self.applied:
            parts.append(f"applied {len(self.applied)} migration(s): {', '.join(self.applied)}")
        if self.reapplied:
            parts.append(f"re-applied {len(self.reapplied)} view/function file(s)")
        return "; ".join(parts)


def discover(sql_dir: Path) -> tuple[list[SqlFile], list[SqlFile]]:
    """The versioned and repeatable files under `sql_dir`, in application order."""
    mig_dir = sql_dir / "migrations"
    if not mig_dir.is_dir():
        raise MigrationError(f"no migrations folder at {mig_dir}")
    versioned: list[SqlFile] = []
    seen: dict[str, Path] = {}
    for path in sorted(mig_dir.glob("*.sql")):
        m = _VERSIONED.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files are named NNN_lower_case_name.sql (three digits first)")
        if m.group(1) in seen:
            raise MigrationError(f"{path.name} and {seen[m.group(1)].name} share version {m.group(1)}")
        seen[m.group(1)] = path
        versioned.append(SqlFile(m.group(1), path, "versioned"))
    repeatable = [
        SqlFile(f"R:{d}/{p.name}", p, "repeatable")
        for d in REPEATABLE_DIRS
        for p in sorted((sql_dir / d).glob("*.sql"))
    ]
    return versioned, repeatable


def _ensure_role(cur: psycopg2.extensions.cursor, role: str) -> None:
    # Roles are cluster-wide and several databases may migrate at once: tolerate a race.
    cur.execute(
        sql.SQL(
            "do $$ begin if not exists (select from pg_roles where rolname = {lit}) then "
            "create role {ident} nologin; end if; "
            "exception when duplicate_object or unique_violation then null; end $$"
        ).format(lit=sql.Literal(role), ident=sql.Identifier(role))
    )


def ensure_roles(cur: psycopg2.extensions.cursor, settings: Settings) -> None:
    """Create the analyst and sender roles (NOLOGIN; a deployer grants LOGIN) and their grants.

    The analyst role reads the `v_*` views; the sender role gets schema usage and EXECUTE on the
    sender protocol functions (SECURITY DEFINER: PUBLIC's default EXECUTE is revoked), nothing else.
    """
    analyst = sql.Identifier(settings.analyst_role)
    sender = sql.Identifier(settings.sender_role)
    for role in (settings.analyst_role, settings.sender_role):
        _ensure_role(cur, role)
    cur.execute(sql.SQL("grant usage on schema recsys to {}, {}").format(analyst, sender))
    # The Campaigns page logs in as this login and reads as the analyst role (`set role`); a login
    # that may not grant the role itself leaves it to the deployer (the page's error says so).
    cur.execute(
        sql.SQL(
            "do $$ begin if not (select rolsuper from pg_roles where rolname = current_user) then "
            "execute format('grant %I to current_user', {lit}); end if; "
            "exception when insufficient_privilege or invalid_grant_operation then null; end $$"
        ).format(lit=sql.Literal(settings.analyst_role))
    )
    cur.execute(
        "select c.relname from pg_class as c join pg_namespace as n on n.oid = c.relnamespace "
        "where n.nspname = 'recsys' and c.relkind = 'v' and c.relname like 'v\\_%%'"
    )
    for (view,) in cur.fetchall():
        cur.execute(sql.SQL("grant select on {} to {}").format(sql.Identifier("recsys", view), analyst))
    for signature in SENDER_FUNCTIONS:
        cur.execute("select to_regprocedure(%s) is not null", (signature,))
        if cur.fetchone()[0]:
            function = sql.SQL(signature)  # a constant of this module, not input
            cur.execute(sql.SQL("revoke execute on function {} from public").format(function))
            cur.execute(sql.SQL("grant execute on function {} to {}").format(function, sender))


ATTRIBUTION_SETTING = "recsys.attribution_days"
"""The database setting `recsys.attribution_window()` reads (sql/functions/35_attribution.sql)."""


def store_attribution_window(cur: psycopg2.extensions.cursor, settings: Settings) -> None:
    """Store Settings.attribution_days on the database, so every view, every role and every later
    session (analysts, senders, the features) uses the same window; this session uses it at once.

    Nothing is written when the database already stores that value (or stores none and the value
    is the function's default, 3). Storing a custom setting on a database (ALTER DATABASE ... SET)
    needs a superuser, or on PostgreSQL 15+ the database's owner with SET on the parameter."""
    days = int(settings.attribution_days)
    cur.execute("select set_config(%s, %s, false)", (ATTRIBUTION_SETTING, str(days)))
    cur.execute(
        """
        select split_part(c, '=', 2)
        from pg_db_role_setting as s
        cross join lateral unnest(s.setconfig) as c
        where s.setrole = 0 and split_part(c, '=', 1) = %s
          and s.setdatabase = (select oid from pg_database where datname = current_database())
        """,
        (ATTRIBUTION_SETTING,),
    )
    row = cur.fetchone()
    stored = row[0] if row else None
    if stored == str(days) or (stored is None and days == 3):
        return
    cur.execute("select current_database(), current_user")
    database, user = cur.fetchone()
    try:
        cur.execute(
            sql.SQL("alter database {} set {} = {}").format(
                sql.Identifier(database), sql.SQL(ATTRIBUTION_SETTING), sql.Literal(str(days))
            )
        )
    except psycopg2.errors.InsufficientPrivilege as e:
        raise MigrationError(
            f"cannot store the attribution window of {days} days (RECSYS_ATTRIBUTION_DAYS) on database "
            f"{database!r} as {user!r}: {str(e).strip()}. Migrate as a superuser, or as the database's "
            f"owner after a superuser ran: grant set on parameter {ATTRIBUTION_SETTING} to {user}"
        ) from e


def migrate(conn: Connection, settings: Settings) -> MigrateResult:
    """Bring the schema up to date in one transaction (the caller's `connect()` commits)."""
    versioned, repeatable = discover(settings.sql_dir)
    applied: list[str] = []
    reapplied: list[str] = []
    with conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        cur.execute("create schema if not exists recsys")
        cur.execute(
            """
            create table if not exists recsys.schema_migrations (
                version text primary key,
                file_name text not null,
                kind text not null check (kind in ('versioned', 'repeatable')),
                checksum text not null,
                applied_at timestamptz not null default clock_timestamp()
            )
            """
        )
        cur.execute(
            "comment on table recsys.schema_migrations is "
            "'Applied schema migrations (versioned, once each) and view/function files, with checksums.'"
        )
        done = {r["version"]: r for r in fetch_all(conn, "select * from recsys.schema_migrations")}

        for f in versioned:
            row = done.get(f.version)
            if row is not None:
                if row["checksum"] != f.checksum:
                    raise MigrationError(
                        f"{f.label} was changed after it was applied on {row['applied_at']:%Y-%m-%d %H:%M} UTC "
                        f"(recorded checksum {row['checksum'][:12]}, file now {f.checksum[:12]}). "
                        "Applied migrations are never edited: restore the file and add a new numbered one."
                    )
                continue
            _execute_file(cur, f)
            cur.execute(
                "insert into recsys.schema_migrations (version, file_name, kind, checksum) values (%s, %s, %s, %s)",
                (f.version, f.path.name, f.kind, f.checksum),
            )
            applied.append(f.path.name)

        changed = [f for f in repeatable if done.get(f.version, {}).get("checksum") != f.checksum]
        # a migration may rebuild a table the views read (dropping them first): re-apply after any
        if changed or applied:
            for f in repeatable:
                _execute_file(cur, f)
                cur.execute(
                    """
                    insert into recsys.schema_migrations (version, file_name, kind, checksum)
                    values (%s, %s, %s, %s)
                    on conflict (version) do update
                    set checksum = excluded.checksum, applied_at = clock_timestamp()
                    """,
                    (f.version, f.path.name, f.kind, f.checksum),
                )
            reapplied = [f.label for f in repeatable]
        ensure_roles(cur, settings)
        store_attribution_window(cur, settings)
    result = MigrateResult(applied, reapplied)
    log.info("db migrate: %s", result.summary())
    return result


def _execute_file(cur: psycopg2.extensions.cursor, f: SqlFile) -> None:
    text = f.path.read_text(encoding="utf-8")
    try:
        cur.execute(text)
    except psycopg2.Error as e:
        detail = (e.pgerror or str(e)).strip()
        raise MigrationError(f"{f.label} failed: {detail}") from e
