"""One typed settings object, read from the environment."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from domain.campaigns.destinations import AllowList
from domain.private_files import write_private

#: The embedded database inside the data directory, when LOYALTY_DATABASE_URL is not set.
SQLITE_FILE = "loyalty.db"


class ConfigurationError(Exception):
    """The environment does not describe a runnable service."""


class Introspection(StrEnum):
    """Who may introspect the schema and see "Did you mean ...?" suggestions in errors."""

    ON = "on"  # everyone (`loyalty demo`, `serve --demo`)
    AUTHENTICATED = "authenticated"  # admin sessions and API keys (the default of `serve`)
    OFF = "off"  # nobody


class LogFormat(StrEnum):
    """LOYALTY_LOG_FORMAT: JSON lines, readable text, or AUTO (JSON unless stderr is a terminal)."""

    AUTO = "auto"
    JSON = "json"
    TEXT = "text"


@dataclass(frozen=True)
class Retention:
    """Days `loyalty prune` keeps of the tables that only grow (docs/operations.md, "Retention").

    The minimums protect what the engine still reads: a year of segment analytics
    (366 days) and the longest `non-compliant` window a program may configure (366
    days) need the change log, messages and fraud findings of that long.
    """

    segment_changes_days: int = 400
    delivered_days: int = 30
    dead_days: int = 90
    messages_days: int = 400
    findings_days: int = 400

    #: variable, attribute, minimum
    VARIABLES = (
        ("LOYALTY_RETAIN_SEGMENT_CHANGES_DAYS", "segment_changes_days", 367),
        ("LOYALTY_RETAIN_DELIVERED_DAYS", "delivered_days", 1),
        ("LOYALTY_RETAIN_DEAD_DAYS", "dead_days", 7),
        ("LOYALTY_RETAIN_MESSAGES_DAYS", "messages_days", 367),
        ("LOYALTY_RETAIN_FINDINGS_DAYS", "findings_days", 367),
    )

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Retention:
        days: dict[str, int] = {}
        for name, attribute, minimum in cls.VARIABLES:
            value = _positive(env, name, getattr(cls, attribute))
            if value < minimum:
                raise ConfigurationError(f"{name} must be at least {minimum} days, not {value}")
            days[attribute] = value
        return cls(**days)


@dataclass(frozen=True)
class Settings:
    #: Empty: not configured (no LOYALTY_DATABASE_URL and no data directory to hold SQLite).
    database_url: str = ""
    #: LOYALTY_DATABASE_REPLICA_URL: a PostgreSQL streaming replica for the reads that may lag.
    database_replica_url: str | None = None
    #: Seconds a new replica connection may take before the read goes to the primary instead ...
    replica_connect_timeout_s: int = 2
    #: ... and seconds after a failed attempt before the replica is tried again.
    replica_recheck_s: int = 10
    redis_url: str | None = None  # None: an embedded Redis server under data_dir
    redis_prefix: str = "loyalty:"
    secret_key: str | None = None
    #: Absolute; None when neither --data-dir nor LOYALTY_DATA_DIR names one (nothing is written).
    data_dir: Path | None = None
    introspection: Introspection = Introspection.AUTHENTICATED
    #: LOYALTY_WEBHOOK_ALLOW: non-public webhook destinations the operator allows (destinations.py).
    webhook_allow: AllowList = field(default_factory=AllowList)
    #: LOYALTY_TRUSTED_PROXIES: peers whose X-Forwarded-For names the client (none by default).
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_query_depth: int = 10
    max_query_tokens: int = 5000
    max_query_aliases: int = 30
    max_query_cost: int = 50_000
    max_body_bytes: int = 8 * 1024 * 1024
    admin_session_ttl_s: int = 12 * 3600
    member_token_ttl_s: int = 3600
    #: Changes a live subscription may have queued before it is closed as too slow.
    subscriber_queue: int = 1000
    #: Run the background loops (relay, scheduler, delivery) in this server process.
    background: bool = True
    #: Database connections each process keeps open (as many again may open briefly under bursts).
    db_pool_size: int = 20
    #: Seconds a client may take to send a request's head (request line and headers) ...
    header_timeout_s: int = 10
    #: ... and its body; a slower client is answered 408 and disconnected.
    body_timeout_s: int = 30
    log_format: LogFormat = LogFormat.AUTO
    #: The bearer token GET /metrics requires; unset: /metrics is not served (404).
    metrics_token: str | None = field(default=None, repr=False)
    retention: Retention = field(default_factory=Retention)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        raw_dir = env.get("LOYALTY_DATA_DIR", "").strip()
        data_dir = Path(raw_dir).expanduser().absolute() if raw_dir else None
        return cls(
            database_url=env.get("LOYALTY_DATABASE_URL") or (sqlite_url(data_dir) if data_dir else ""),
            database_replica_url=_replica_url(env, "LOYALTY_DATABASE_REPLICA_URL"),
            replica_connect_timeout_s=_positive(env, "LOYALTY_REPLICA_CONNECT_TIMEOUT", 2),
            replica_recheck_s=_positive(env, "LOYALTY_REPLICA_RECHECK", 10),
            redis_url=env.get("LOYALTY_REDIS_URL") or None,
            redis_prefix=env.get("LOYALTY_REDIS_PREFIX", "loyalty:"),
            secret_key=env.get("LOYALTY_SECRET_KEY") or None,
            data_dir=data_dir,
            introspection=_introspection(env.get("LOYALTY_INTROSPECTION", "")),
            webhook_allow=_webhook_allow(env.get("LOYALTY_WEBHOOK_ALLOW", "")),
            trusted_proxies=_networks(env.get("LOYALTY_TRUSTED_PROXIES", ""), "LOYALTY_TRUSTED_PROXIES"),
            subscriber_queue=_positive(env, "LOYALTY_SUBSCRIBER_QUEUE", 1000),
            background=_flag(env.get("LOYALTY_BACKGROUND", "1")),
            db_pool_size=_positive(env, "LOYALTY_DB_POOL_SIZE", 20),
            header_timeout_s=_positive(env, "LOYALTY_HEADER_TIMEOUT", 10),
            body_timeout_s=_positive(env, "LOYALTY_BODY_TIMEOUT", 30),
            log_format=_log_format(env, "LOYALTY_LOG_FORMAT"),
            metrics_token=_token(env, "LOYALTY_METRICS_TOKEN"),
            retention=Retention.from_env(env),
        )

    def __post_init__(self) -> None:
        if self.database_replica_url and not self.database_url.startswith("postgresql"):
            raise ConfigurationError(
                "LOYALTY_DATABASE_REPLICA_URL needs a PostgreSQL primary: set LOYALTY_DATABASE_URL "
                "to the primary's postgresql+asyncpg:// URL"
            )

    def with_secret(self, secret_key: str) -> Settings:
        return replace(self, secret_key=secret_key)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigurationError(
                "no database: set LOYALTY_DATABASE_URL, or give a data directory "
                f"(--data-dir DIR or LOYALTY_DATA_DIR) for SQLite in DIR/{SQLITE_FILE}"
            )
        return self.database_url

    def require_data_dir(self, purpose: str) -> Path:
        """The data directory, or a ConfigurationError saying what needed it."""
        if self.data_dir is None:
            raise ConfigurationError(
                f"{purpose} needs a data directory: pass --data-dir DIR or set LOYALTY_DATA_DIR "
                "(`make demo` uses var/ in the checkout)"
            )
        return self.data_dir

    def require_secret(self) -> str:
        if not self.secret_key:
            raise ConfigurationError(
                "LOYALTY_SECRET_KEY is not set: set it to a long random string "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`), "
                "or run with --demo to use a generated local key"
            )
        if len(self.secret_key) < 32:
            raise ConfigurationError("LOYALTY_SECRET_KEY must be at least 32 characters long")
        return self.secret_key


def _flag(value: str) -> bool:
    return value.strip().lower() not in ("0", "false", "no", "off")


def _introspection(raw: str) -> Introspection:
    value = raw.strip().lower()
    if not value:
        return Introspection.AUTHENTICATED
    if value in ("1", "true", "yes", "on"):
        return Introspection.ON
    if value in ("0", "false", "no", "off"):
        return Introspection.OFF
    if value == "authenticated":
        return Introspection.AUTHENTICATED
    raise ConfigurationError(f"LOYALTY_INTROSPECTION must be on, authenticated or off, not {raw!r}")


def split_entries(text: str) -> list[str]:
    """The entries of a comma- or whitespace-separated list: the one syntax of LOYALTY_WEBHOOK_ALLOW
    and LOYALTY_TRUSTED_PROXIES."""
    return [e for e in re.split(r"[,\s]+", text.strip()) if e]


def _webhook_allow(raw: str) -> AllowList:
    try:
        return AllowList.parse(split_entries(raw))
    except ValueError as error:
        raise ConfigurationError(f"LOYALTY_WEBHOOK_ALLOW: {error}") from None


def _networks(raw: str, name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for entry in split_entries(raw):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigurationError(f"{name}: {entry!r} is not an IP address or network") from None
    return tuple(networks)


def _positive(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigurationError(f"{name} must be a positive integer, not {raw!r}")
    return int(raw)


def _replica_url(env: dict[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.startswith("postgresql+asyncpg://"):
        scheme = raw.split(":", 1)[0]
        raise ConfigurationError(
            f"{name} must be a postgresql+asyncpg:// URL of a streaming replica, not {scheme}:"
        )
    return raw


def _log_format(env: dict[str, str], name: str) -> LogFormat:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return LogFormat.AUTO
    try:
        return LogFormat(raw)
    except ValueError:
        allowed = ", ".join(member.value for member in LogFormat)
        raise ConfigurationError(f"{name} must be one of {allowed}, not {raw!r}") from None


def _token(env: dict[str, str], name: str) -> str | None:
    raw = env.get(name) or None
    if raw is not None and (len(raw) < 16 or not raw.isprintable() or " " in raw):
        raise ConfigurationError(f"{name} must be at least 16 printable characters without spaces")
    return raw


def sqlite_url(data_dir: Path) -> str:
    """The embedded SQLite database of a data directory."""
    return f"sqlite+aiosqlite:///{data_dir / SQLITE_FILE}"


def local_secret_key(data_dir: Path) -> str:
    """The demo's secret key: generated once and kept in data_dir/secret_key (mode 0600)."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(48)
    write_private(path, key.encode())
    return key
