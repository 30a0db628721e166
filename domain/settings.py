"""One typed settings object, read from the environment."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

#: The embedded database inside the data directory, when LOYALTY_DATABASE_URL is not set.
SQLITE_FILE = "loyalty.db"


class ConfigurationError(Exception):
    """The environment does not describe a runnable service."""


@dataclass(frozen=True)
class Settings:
    #: Empty: not configured (no LOYALTY_DATABASE_URL and no data directory to hold SQLite).
    database_url: str = ""
    redis_url: str | None = None  # None: an embedded Redis server under data_dir
    redis_prefix: str = "loyalty:"
    secret_key: str | None = None
    #: Absolute; None when neither --data-dir nor LOYALTY_DATA_DIR names one (nothing is written).
    data_dir: Path | None = None
    introspection: bool = True
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

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        raw_dir = env.get("LOYALTY_DATA_DIR", "").strip()
        data_dir = Path(raw_dir).expanduser().absolute() if raw_dir else None
        return cls(
            database_url=env.get("LOYALTY_DATABASE_URL") or (sqlite_url(data_dir) if data_dir else ""),
            redis_url=env.get("LOYALTY_REDIS_URL") or None,
            redis_prefix=env.get("LOYALTY_REDIS_PREFIX", "loyalty:"),
            secret_key=env.get("LOYALTY_SECRET_KEY") or None,
            data_dir=data_dir,
            introspection=_flag(env.get("LOYALTY_INTROSPECTION", "1")),
            subscriber_queue=_positive(env, "LOYALTY_SUBSCRIBER_QUEUE", 1000),
            background=_flag(env.get("LOYALTY_BACKGROUND", "1")),
            db_pool_size=_positive(env, "LOYALTY_DB_POOL_SIZE", 20),
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


def _positive(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigurationError(f"{name} must be a positive integer, not {raw!r}")
    return int(raw)


def sqlite_url(data_dir: Path) -> str:
    """The embedded SQLite database of a data directory."""
    return f"sqlite+aiosqlite:///{data_dir / SQLITE_FILE}"


def local_secret_key(data_dir: Path) -> str:
    """The demo's secret key: generated once and kept in data_dir/secret_key (mode 0600)."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key
