"""Test data for the sender, feedback and campaign-summary tests: users, runs and offers written
straight into the campaign tables with SQL set operations (scoring is tested elsewhere); and
`run_cli`, the `recsys` command line in a child process, for every test of a command."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from psycopg2 import sql

from recsys.config.settings import PROJECT_ROOT
from recsys.db import Connection, fetch_all, fetch_value

CAMPAIGN_TABLES = (
    "offer_events",
    "consent_revocations",
    "address_suppressions",
    "campaign_holdout",
    "campaign_offers",
    "campaign_run_shards",
    "campaign_runs",
    "users",
    "load_rejects",
    "load_log",
)


def reset(conn: Connection) -> None:
    """Empty the campaign tables and users (schema kept)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("truncate {} cascade").format(
                sql.SQL(", ").join(sql.Identifier("recsys", t) for t in CAMPAIGN_TABLES)
            )
        )
    conn.commit()


def load_id(conn: Connection) -> int:
    """A load_log row for rows written by tests."""
    existing = fetch_value(conn, "select min(load_id) from recsys.load_log where file_name = 'tests'")
    if existing is not None:
        return int(existing)
    return int(
        fetch_value(
            conn,
            "insert into recsys.load_log (source_path, file_name, file_sha256, file_bytes, status, reference_at) "
            "values ('tests', 'tests', 'tests', 0, 'loaded', now()) returning load_id",
        )
    )


def add_users(conn: Connection, first: int, last: int, *, opt_in: bool = True, with_address: bool = True) -> None:
    """Users first..last consenting (or not) to every channel, with addresses u<id>@example.com etc."""
    lid = load_id(conn)
    with conn.cursor() as cur:
        cur.execute(
            """
            insert into recsys.users (
                user_id, email_opt_in, sms_opt_in, push_opt_in, email, phone, push_token, load_id, updated_at
            )
            select g, %(opt_in)s, %(opt_in)s, %(opt_in)s,
                   case when %(addr)s then 'u' || g || '@example.com' end,
                   case when %(addr)s then '+1555' || lpad(g::text, 7, '0') end,
                   case when %(addr)s then 'tok' || g end,
                   %(lid)s, timestamptz '2026-01-01 00:00Z'
            from generate_series(%(first)s::bigint, %(last)s::bigint) as g
            on conflict (user_id) do nothing
            """,
            {"opt_in": opt_in, "addr": with_address, "lid": lid, "first": first, "last": last},
        )
    conn.commit()


def add_run(conn: Connection, run_id: str, campaign_date: dt.date, state: str = "published") -> None:
    with conn.cursor() as cur:
        cur.execute("select recsys.ensure_campaign_partition(%s)", (campaign_date,))
        cur.execute(
            "insert into recsys.campaign_runs (run_id, campaign_date, state, published_at) values (%s, %s, %s, "
            "case when %s = 'published' then now() end)",
            (run_id, campaign_date, state, state),
        )
    conn.commit()


def add_offers(
    conn: Connection,
    run_id: str,
    campaign_date: dt.date,
    first_user: int,
    last_user: int,
    *,
    channel: str = "email",
    due_in: dt.timedelta = dt.timedelta(minutes=-1),
    valid_for: dt.timedelta = dt.timedelta(hours=24),
    offer_type: str = "discount",
    timing: str = "immediate",
    segment: str | None = None,
    max_attempts: int = 3,
) -> list[int]:
    """One offer per user first..last, scheduled at now() + due_in; returns the offer ids."""
    with conn.cursor() as cur:
        cur.execute(
            """
            insert into recsys.campaign_offers (
                run_id, campaign_date, user_id, action_id, offer_type, offer_value, value_unit, channel, timing,
                scheduled_at, expires_at, subject, body, propensity, is_exploration, features_as_of, segment,
                max_attempts
            )
            select %(run)s, %(date)s, g, 1, %(type)s, 10, 'percent_off', %(channel)s, %(timing)s,
                   now() + %(due)s, now() + %(due)s + %(valid)s, 'Offer ' || g, '<p>Hello ' || g || '</p>',
                   0.25, false, %(date)s, %(segment)s, %(max_attempts)s
            from generate_series(%(first)s::bigint, %(last)s::bigint) as g
            returning offer_id
            """,
            {
                "run": run_id,
                "date": campaign_date,
                "type": offer_type,
                "channel": channel,
                "timing": timing,
                "due": due_in,
                "valid": valid_for,
                "first": first_user,
                "last": last_user,
                "segment": segment,
                "max_attempts": max_attempts,
            },
        )
        ids = sorted(r[0] for r in cur.fetchall())
    conn.commit()
    return ids


def published_offers(conn: Connection, day: dt.date, last_user: int, **offer: object) -> list[int]:
    """Users 1..`last_user` (consenting, with addresses), the published run "r" of `day`, and an
    offer of it to each (`add_offers` options); returns the offer ids."""
    add_users(conn, 1, last_user)
    add_run(conn, "r", day)
    return add_offers(conn, "r", day, 1, last_user, **offer)


def claim(
    conn: Connection,
    worker: str = "w1",
    n: int = 100,
    channel: str = "email",
    lease: dt.timedelta = dt.timedelta(minutes=5),
) -> list[dict]:
    """Claim up to `n` due offers of `channel` through `recsys.claim_offers`, committed."""
    rows = fetch_all(conn, "select * from recsys.claim_offers(%s, %s, %s, %s)", (channel, worker, n, lease))
    conn.commit()
    return rows


def call(conn: Connection, query: str, *params: object) -> object:
    """The first value `query` returns, committed (one protocol call = one transaction)."""
    value = fetch_value(conn, query, params)
    conn.commit()
    return value


def statuses(conn: Connection) -> dict[str, int]:
    rows = fetch_all(conn, "select status, count(*) as n from recsys.campaign_offers group by status")
    return {r["status"]: r["n"] for r in rows}


def end_leases(conn: Connection) -> None:
    """Let every lease and back-off run out now (instead of waiting for it)."""
    with conn.cursor() as cur:
        cur.execute(
            "update recsys.campaign_offers set lease_until = now() - interval '1 second' where lease_until is not null"
        )
    conn.commit()


def cli_env(url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(
        RECSYS_DATABASE_URL=url,
        RECSYS_DATA_DIR=str(tmp_path),
        RECSYS_SENDER_POLL_SECONDS="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(PROJECT_ROOT),
    )
    env.update(extra)
    return env


def recsys_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "recsys", *args]


def run_cli(url: str, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        recsys_cmd(*args),
        env=cli_env(url, tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
        check=False,
    )


def tls_files(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate it signed for `host` (and localhost), as PEM files:
    (ca.pem, server.pem, server.key)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recsys test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path
