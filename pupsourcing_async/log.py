"""Logging: the standard ``logging`` module by default, or any object with
``debug/info/error(msg, **fields)``.

Every module logs to a ``pupsourcing_async.*`` logger with its context as structured
fields (in ``extra=`` and appended to the message as ``key=value``), formatted lazily so
a disabled level costs one check. A record also carries ``pupsourcing_message`` (the
message alone) and ``pupsourcing_fields`` (the fields as a dict) for JSON formatters.
Payloads are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

__all__ = ["Logger", "NullLogger", "get_logger"]


@runtime_checkable
class Logger(Protocol):
    """A structured logger, as the Go library's ``es.Logger``.

    Pass one as ``StoreConfig(logger=...)`` or ``ProcessorConfig(logger=...)`` to route the
    library's logs to structlog, loguru or anything else.
    """

    def debug(self, msg: str, **fields: object) -> None:
        """Log a detail useful when tracing a problem."""

    def info(self, msg: str, **fields: object) -> None:
        """Log a notable event in normal operation."""

    def error(self, msg: str, **fields: object) -> None:
        """Log a failure."""


class NullLogger:
    """A logger that drops everything."""

    def debug(self, msg: str, **fields: object) -> None:
        pass

    def info(self, msg: str, **fields: object) -> None:
        pass

    def error(self, msg: str, **fields: object) -> None:
        pass


# Keys that logging.LogRecord owns; a field by one of these names goes only into the text.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class _Fields:
    """Renders ``key=value`` pairs only when a handler formats the record."""

    __slots__ = ("fields",)

    def __init__(self, fields: Mapping[str, object]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.fields.items())


class _StdlibLogger:
    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _log(self, level: int, msg: str, fields: Mapping[str, object]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        extra: dict[str, object] = {
            key: value for key, value in fields.items() if key not in _RESERVED
        }
        # For formatters that render records themselves (JSON): the message without the
        # appended fields, and the fields together.
        extra["pupsourcing_message"] = msg
        extra["pupsourcing_fields"] = dict(fields)
        if fields:
            self._logger.log(level, "%s %s", msg, _Fields(fields), extra=extra, stacklevel=3)
        else:
            self._logger.log(level, "%s", msg, extra=extra, stacklevel=3)

    def debug(self, msg: str, **fields: object) -> None:
        self._log(logging.DEBUG, msg, fields)

    def info(self, msg: str, **fields: object) -> None:
        self._log(logging.INFO, msg, fields)

    def error(self, msg: str, **fields: object) -> None:
        self._log(logging.ERROR, msg, fields)


def get_logger(custom: Logger | None, name: str) -> Logger:
    """The logger to use: ``custom`` if given, else the standard logger ``name``."""
    if custom is not None:
        return custom
    return _StdlibLogger(logging.getLogger(name))
