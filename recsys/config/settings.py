"""Settings: one object built from `RECSYS_*` environment variables, never at import time.

Every stage takes a `Settings` (or the values it needs from one) explicitly, so the CLI, Airflow
tasks and tests configure the same code the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from recsys.errors import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
PROJECT_ROOT = PACKAGE_ROOT.parent
"""The checkout when running from one; for an installed package, its site-packages folder."""


def package_dir(name: str) -> Path:
    """A folder the package ships with: `sql`, `templates`, `dags` or `plugins`.

    An installed package holds them inside itself (`recsys/sql`, ...: pyproject.toml maps the
    repository's top-level folders there); a checkout (the editable install of `make`) has them
    at the top level.
    """
    inside = PACKAGE_ROOT / name
    return inside if inside.is_dir() else PROJECT_ROOT / name


def state_root() -> Path:
    """Where data, the inbox and the embedded server live by default: the checkout when running
    from one, else the current directory (an installed package never writes into site-packages)."""
    return PROJECT_ROOT if (PROJECT_ROOT / "pyproject.toml").is_file() else Path.cwd()


_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Each field maps to `RECSYS_<FIELD NAME IN UPPER CASE>`."""

    config: Path = field(default_factory=lambda: PACKAGE_ROOT / "config.toml")
    """The product configuration file: offer catalog, reward rules, campaign rules (`load_config`)."""
    database_url: str | None = None
    """PostgreSQL URL. Unset: an embedded server (pgserver) in `embedded_pgdata`."""
    data_dir: Path = field(default_factory=lambda: state_root() / "data")
    """Where generated data, the inbox and local state live."""
    inbox: Path = field(default_factory=lambda: state_root() / "data" / "inbox")
    """Folder the nightly run loads new input files from; loaded files move to `inbox/loaded/`."""
    inbox_settle_seconds: int = 60
    """An inbox file modified less than this long ago may still be arriving: left for a later run."""
    max_reject_rate: float = 0.5
    """A file (workbook sheet) of 100+ rows with a larger share of rejects is refused (all rejected: always)."""
    embedded_pgdata: Path = field(default_factory=lambda: state_root() / ".pgdata")
    """Data folder of the embedded PostgreSQL server (kept between runs)."""
    sql_dir: Path = field(default_factory=lambda: package_dir("sql"))
    """Migrations, views and feature queries (shipped inside the package)."""
    sender_role: str = "recsys_sender"
    """Database role for message senders: may call the sender functions and nothing else."""
    analyst_role: str = "recsys_analyst"
    """Database role for analysts: read-only on the analyst views."""
    alert_email: str = ""
    """Comma-separated addresses the nightly DAG mails failure and deadline notices to (empty: log only)."""
    alert_smtp_conn_id: str = "smtp_default"
    """Airflow SMTP connection those notices go out through (Airflow's SMTP provider)."""
    event_retention_days: int = 730
    """Monthly `behavior_events` partitions wholly older than this are dropped."""
    feature_retention_days: int = 400
    """`user_features` partitions older than this (by `as_of`) are dropped."""
    feature_window_days: int = 90
    """Look-back window for frequency, monetary, engagement and preference features."""
    recency_cap_days: int = 365
    """Cap for recency-type features; also their value when there was no such event."""
    feature_workers: int = 2
    """Connections that build a date's features side by side, each for a range of user ids (1: one)."""
    attribution_days: int = 3
    """Offers count towards responsiveness once their attribution window closed before `as_of`."""
    sender_batch: int = 100
    """Offers a reference sender claims per call of `claim_offers`."""
    sender_lease_seconds: int = 300
    """How long a claim holds an offer; an unacked claim is claimable again after it."""
    sender_poll_seconds: int = 5
    """A polling sender's pause when nothing is due."""
    smtp_host: str = "localhost"
    """SMTP server of the `smtp` sender adapter."""
    smtp_port: int = 25
    """Its port."""
    smtp_user: str = ""
    """SMTP login (empty: no login)."""
    smtp_password: str = ""
    """SMTP password."""
    smtp_starttls: bool = False
    """Upgrade the SMTP connection with STARTTLS (certificate and host name verified)."""
    smtp_ssl: bool = False
    """Implicit TLS from the first byte (SMTPS, usually port 465; port 465 implies it)."""
    smtp_ca_file: str = ""
    """PEM file of extra CAs to trust for the SMTP server's certificate (a private CA)."""
    smtp_from: str = "offers@example.com"
    """From address of offer emails."""
    webhook_url: str = ""
    """URL the `webhook` sender adapter POSTs each offer to: https://, or http:// only to this machine."""
    webhook_timeout_seconds: int = 10
    """Timeout of one webhook request."""
    webhook_secret: str = ""
    """Secret shared with the webhook receiver: every request is signed with HMAC-SHA256 of it."""
    unsubscribe_url: str = ""
    """https URL of the shop's unsubscribe endpoint, with `{offer_id}` and `{token}` (empty: a mailto link)."""
    unsubscribe_secret: str = ""
    """Secret of the unsubscribe token (HMAC-SHA256 of the offer id), shared with that endpoint."""
    unsubscribe_mailbox: str = ""
    """Address of the mailto unsubscribe link (empty: the From address)."""

    @property
    def loaded_dir(self) -> Path:
        return self.inbox / "loaded"


def _convert(name: str, raw: str, default: object) -> object:
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        try:
            value = int(raw)
        except ValueError as e:
            raise ConfigError(f"RECSYS_{name.upper()}: expected a whole number, got {raw!r}") from e
        if value < 0:
            raise ConfigError(f"RECSYS_{name.upper()}: must be >= 0, got {value}")
        return value
    if isinstance(default, float):
        try:
            number = float(raw)
        except ValueError as e:
            raise ConfigError(f"RECSYS_{name.upper()}: expected a number, got {raw!r}") from e
        if not 0 <= number < float("inf"):
            raise ConfigError(f"RECSYS_{name.upper()}: must be a number >= 0, got {raw!r}")
        return number
    if isinstance(default, Path):
        return Path(raw).expanduser()
    return raw


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from the environment (or `env`), then apply keyword overrides."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    base = Settings()
    for f in fields(Settings):
        raw = env.get(f"RECSYS_{f.name.upper()}")
        if raw is not None and raw != "":
            values[f.name] = _convert(f.name, raw, getattr(base, f.name))
    if "data_dir" in values and "inbox" not in values:
        values["inbox"] = Path(values["data_dir"]) / "inbox"  # type: ignore[arg-type]
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings(**values)  # type: ignore[arg-type]
    if not 0 <= settings.max_reject_rate <= 1:
        raise ConfigError(f"RECSYS_MAX_REJECT_RATE: expected a share from 0 to 1, got {settings.max_reject_rate}")
    for role in (settings.sender_role, settings.analyst_role):
        if not _ROLE_NAME.match(role):
            raise ConfigError(
                f"role name {role!r} is not a plain lower-case PostgreSQL identifier (letters, digits, _)"
            )
    return settings
