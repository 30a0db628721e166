"""Logging for `loyalty serve` and the CLI: JSON lines off a terminal, readable lines on one.

Configured once per process (`configure`, or uvicorn's `log_config` from
`uvicorn_config`, which its worker processes apply too). Every line carries the
context fields of domain/ops/logcontext.py: `request_id` and `client_ip` for an
HTTP request or a WebSocket connection, `loop`, `pass_id` and `caused_by` for a background pass.

A JSON line is one object: `time` (UTC, ISO 8601), `level`, `logger`, `message`,
the context fields, the record's extras, and `exception` (the traceback as text)
when there is one. uvicorn's access lines add `client`, `method`, `path`,
`http_version` and `status`.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from domain.ops import logcontext
from domain.settings import LogFormat

#: Attributes every LogRecord has: not extras.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message", "taskName"}
)
#: The positional arguments of uvicorn's access line: '%s - "%s %s HTTP/%s" %d'.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def resolve(log_format: LogFormat, stream: TextIO | None = None) -> LogFormat:
    """AUTO becomes JSON unless the stream (stderr) is a terminal."""
    if log_format != LogFormat.AUTO:
        return log_format
    stream = stream or sys.stderr
    return LogFormat.TEXT if stream.isatty() else LogFormat.JSON


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context fields and the record's extras."""
    fields: dict[str, Any] = dict(logcontext.current())
    fields.update((k, v) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
    if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
        fields.update(zip(_ACCESS_FIELDS, record.args, strict=True))
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [key=value ...] message` for people at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(context)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        pairs = " ".join(f"{k}={v}" for k, v in _fields(record).items() if k not in _ACCESS_FIELDS)
        record.context = f" [{pairs}]" if pairs else ""
        return super().format(record)


def uvicorn_config(log_format: LogFormat, level: str = "info") -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn.run(log_config=...): uvicorn's loggers and ours,
    one stderr handler with our formatter. Each worker process applies it."""
    formatter = "json" if resolve(log_format) == LogFormat.JSON else "text"
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": f"{__name__}.JsonFormatter"},
            "text": {"()": f"{__name__}.TextFormatter"},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": formatter, "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            name: {"handlers": [], "level": level, "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure(log_format: LogFormat, level: str = "warning") -> None:
    """Configure this process's logging (the CLI's commands; `serve` passes `uvicorn_config` instead)."""
    logging.config.dictConfig(uvicorn_config(log_format, level))
