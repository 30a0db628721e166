"""How a failed `loyalty` command reports: one line, `loyalty: CODE: message`, exit code 1."""

from __future__ import annotations


class CommandError(Exception):
    """A failure the command reports as `loyalty: CODE: message`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def failure(error: Exception) -> tuple[str, str]:
    """The code and the one-line message of a failed command; INTERNAL for the unexpected.

    A transient fault (domain/transient.py: the database or Redis unreachable, busy, restarting)
    is SERVICE_UNAVAILABLE, as in the API: running the command again may succeed.
    """
    from redis.exceptions import RedisError
    from sqlalchemy.exc import ArgumentError, DBAPIError

    import migrations
    from domain.errors import DomainError
    from domain.settings import ConfigurationError
    from domain.transient import is_transient

    if isinstance(error, DomainError):
        return error.code, error.message
    if isinstance(error, CommandError | migrations.NotMigrated):
        return error.code, str(error)
    if isinstance(error, ConfigurationError):
        return "CONFIGURATION", str(error)
    if isinstance(error, ArgumentError):  # a database URL SQLAlchemy cannot use
        return "CONFIGURATION", f"LOYALTY_DATABASE_URL: {first_line(error)}"
    if is_transient(error):
        return "SERVICE_UNAVAILABLE", _named(error)
    if isinstance(error, DBAPIError):  # e.g. no such database or role, a file it cannot open
        return "DATABASE_ERROR", _named(error)
    if isinstance(error, RedisError):  # e.g. a wrong password
        return "REDIS_ERROR", _named(error)
    if isinstance(error, OSError):  # e.g. a data directory it may not write
        return "OS_ERROR", first_line(error)
    return "INTERNAL", (
        f"unexpected {type(error).__name__}: {first_line(error)} "
        "(run the command again with --debug for the traceback)"
    )


def _named(error: Exception) -> str:
    """The message, after what failed: the note the CLI added (the database's URL), else the service."""
    from redis.exceptions import RedisError
    from sqlalchemy.exc import SQLAlchemyError

    notes = getattr(error, "__notes__", None)
    if notes:
        return f"{notes[0]}: {first_line(getattr(error, 'orig', None) or error)}"
    if isinstance(error, SQLAlchemyError):
        return f"the database: {first_line(getattr(error, 'orig', None) or error)}"
    if isinstance(error, RedisError):
        return f"Redis: {first_line(error)}"
    return first_line(error)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
