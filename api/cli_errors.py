"""How a failed `loyalty` command reports: one line, `loyalty: CODE: message`, exit code 1."""

from __future__ import annotations


class CommandError(Exception):
    """A failure the command reports as `loyalty: CODE: message`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def failure(error: Exception) -> tuple[str, str]:
    """The code and the one-line message of a failed command; INTERNAL for the unexpected."""
    from redis.exceptions import ConnectionError as RedisUnreachable
    from redis.exceptions import TimeoutError as RedisTimeout
    from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

    import migrations
    from domain.errors import DomainError
    from domain.settings import ConfigurationError

    if isinstance(error, DomainError):
        return error.code, error.message
    if isinstance(error, CommandError | migrations.NotMigrated):
        return error.code, str(error)
    if isinstance(error, ConfigurationError):
        return "CONFIGURATION", str(error)
    if isinstance(error, ArgumentError):  # a database URL SQLAlchemy cannot use
        return "CONFIGURATION", f"LOYALTY_DATABASE_URL: {first_line(error)}"
    if isinstance(error, OperationalError | InterfaceError):
        return "UNAVAILABLE", f"the database: {first_line(error.orig or error)}"
    if isinstance(error, RedisUnreachable | RedisTimeout):
        return "UNAVAILABLE", f"Redis: {first_line(error)}"
    if isinstance(error, OSError):
        return "UNAVAILABLE", first_line(error)
    return "INTERNAL", (
        f"unexpected {type(error).__name__}: {first_line(error)} "
        "(run the command again with --debug for the traceback)"
    )


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
