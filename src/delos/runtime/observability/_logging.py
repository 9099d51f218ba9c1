"""Logs: JSON lines in production, one readable line otherwise, every line redacted.

:func:`configure_logging` installs one handler on the root logger, so the gateway's loggers and
those of its libraries (the gRPC server library logs application errors with their traceback)
all pass through the redacting formatter. :func:`log_request` writes the one line that
describes a request.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TextIO

from delos.runtime.observability._metrics import AttemptLike

__all__ = ["JsonFormatter", "ReadableFormatter", "configure_logging", "log_request"]

#: Libraries that log every request URL at INFO; URLs may carry keys (Gemini's ``?key=``).
_CHATTY_LOGGERS: Final = ("httpx", "httpcore", "hpack", "h2")
#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES: Final = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
#: Keys of a JSON line that an ``extra`` field may not replace.
_RESERVED_KEYS: Final = frozenset({"ts", "level", "logger", "message", "exception"})

Redact = Callable[[str], str]


def configure_logging(
    level: str,
    env: str,
    redact: Redact,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route every log record to ``stream`` (default: standard error), redacted.

    ``level`` is a level name (``"info"``, any case); ``env == "production"`` selects JSON lines.
    Calling it again replaces the handler it installed before. Returns that handler.
    Raises ValueError for an unknown level name.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    formatter: logging.Formatter
    if env == "production":
        formatter = JsonFormatter(redact)
    else:
        formatter = ReadableFormatter(redact)
    handler = _DelosHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in [h for h in root.handlers if isinstance(h, _DelosHandler)]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(numeric)
    # Fields no formatter here prints, which the logging module would gather for every record
    # (the "Optimization" knobs of its documentation): a stack walk, thread and process names.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    return handler


class _DelosHandler(logging.StreamHandler[TextIO]):
    """Marks the handler :func:`configure_logging` installed, so a second call replaces it."""


#: The last whole second formatted, and its text (a busy gateway logs many lines a second).
_last_second: tuple[int, str] = (-1, "")


def _timestamp(record: logging.LogRecord) -> str:
    global _last_second
    whole = int(record.created)
    if whole != _last_second[0]:
        _last_second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_last_second[1]}.{int(record.msecs):03d}Z"


def _extras(record: logging.LogRecord) -> list[tuple[str, Any]]:
    standard = _STANDARD_ATTRIBUTES
    return [item for item in record.__dict__.items() if item[0] not in standard]


# The encoders json.dumps would build anew on every call (it caches only the default one).
#: A JSON log line.
_JSON_LINE: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
#: A text value quoted in a readable line.
_QUOTED: Final = json.JSONEncoder(ensure_ascii=False)
#: A mapping or list in a readable line.
_COMPACT: Final = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":"))


#: Types passed through as they are (looked up by exact type first: this runs per field).
_PLAIN: Final = frozenset({int, float, bool, type(None)})


def _redacted(value: Any, redact: Redact) -> Any:
    """``value`` made JSON-ready, with every string in it (keys too) redacted."""
    kind = type(value)
    if kind is str:
        return redact(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {redact(str(k)): _redacted(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(v, redact) for v in value]
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the extras, exception text.

    Strings are redacted before encoding, so a secret is found even where JSON would escape it.
    """

    def __init__(self, redact: Redact) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        redact = self._redact
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in _extras(record):
            if key not in _RESERVED_KEYS:
                line[key] = _redacted(value, redact)
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return _JSON_LINE.encode(line)


class ReadableFormatter(logging.Formatter):
    """``ts LEVEL logger: message key=value ...``, then any traceback; redacted as a whole."""

    def __init__(self, redact: Redact) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        head = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        text = " ".join([head, *[f"{key}={_readable(value)}" for key, value in _extras(record)]])
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return self._redact(text)


#: What makes a text value need quotes in a readable line.
_NEEDS_QUOTES: Final = re.compile(r'[\s"=]')


def _readable(value: Any) -> str:
    kind = type(value)
    if kind is int or kind is float or kind is bool or value is None:
        return str(value)
    if isinstance(value, str):
        plain = value and _NEEDS_QUOTES.search(value) is None
        return value if plain else _QUOTED.encode(value)
    if isinstance(value, Mapping | list | tuple):
        if not value:
            return "{}" if isinstance(value, Mapping) else "[]"
        return _COMPACT.encode(value)
    return str(value)


def log_request(
    logger: logging.Logger,
    *,
    request_id: str,
    rpc: str,
    provider: str,
    model: str,
    status: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost_usd: float,
    latency_ms: float,
    ttft_ms: float | None,
    cached: bool,
    client: str,
    metadata: Mapping[str, str],
    attempts: Iterable[AttemptLike],
) -> None:
    """Write the one INFO line that describes a finished request; nothing at all below INFO.

        Units: milliseconds for ``latency_ms``/``ttft_ms``, USD for ``cost_usd``. Every field is
        a structured extra; ``attempts`` become ``{provider, model, kind, outcome, cost_usd}``
    (plus ``error`` when the attempt has one). The formatter redacts them like the message.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    extra = {
        "request_id": request_id,
        "rpc": rpc,
        "provider": provider,
        "model": model,
        "status": status,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost_usd": float(cost_usd),
        "latency_ms": round(latency_ms, 3),
        "ttft_ms": None if ttft_ms is None else round(ttft_ms, 3),
        "cached": cached,
        "client": client,
        "metadata": dict(metadata) if metadata else {},
        "attempts": [_attempt(a) for a in attempts],
    }
    logger.info("%s %s", rpc, status, extra=extra)


def _attempt(attempt: AttemptLike) -> dict[str, Any]:
    described: dict[str, Any] = {
        "provider": attempt.provider,
        "model": attempt.model,
        "kind": attempt.kind.value,
        "outcome": attempt.outcome.value,
        "cost_usd": float(attempt.cost_usd),
    }
    error = getattr(attempt, "error", "")  # AttemptRecord says why a failed attempt failed
    if error:
        described["error"] = str(error)
    return described
