"""Structured logging: structlog JSON lines, a request/case id bound per request, redaction last.

The processor chain is ``merge_contextvars`` first (so ids bound in middleware appear on every
line) and ``redact_personal_data`` just before the renderer (so nothing a processor adds escapes
it). zeep logs whole envelopes at DEBUG, so its loggers are pinned to INFO. An exception a
library logs (aiohttp, for a malformed request) becomes its type, never a traceback.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import orjson
import structlog

# 公民身份号码 (GB 11643): 17 digits + check digit/X, not inside a longer code (实施编码: 31).
_RESIDENT_ID = re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{8}(\d{3}[\dXx])(?![0-9A-Za-z])")
# Mainland mobile numbers, optionally +86; not part of a longer digit run (timestamps, codes).
_MOBILE = re.compile(r"(?<![\d+])(\+?86[- ]?)?(1[3-9]\d)\d{4}(\d{4})(?!\d)")
_SECRET_KEY_NAME = re.compile(
    r"(pass(word|phrase)?|secret|token|authorization|api[_-]?key|private[_-]?key|cookie|credential)",
    re.IGNORECASE,
)
# Field names that carry a person's name or identity in our and the partners' schemas.
_PERSONAL_KEY_NAMES = frozenset(
    {"name", "applicant_name", "full_name", "id_number", "phone", "mobile", "aac002", "aac003"}
)
MASK = "***"


def mask_text(text: str) -> str:
    """Mask 身份证号- and phone-shaped substrings; keep enough to tell records apart."""
    text = _RESIDENT_ID.sub(lambda m: f"{m.group(1)[:3]}{'*' * 11}{m.group(2)[-4:]}", text)
    return _MOBILE.sub(lambda m: f"{m.group(1) or ''}{m.group(2)}****{m.group(3)}", text)


_NAME_KEYS = frozenset({"name", "applicant_name", "full_name", "aac003"})


def masked_for_display(value: Any, key: str | None = None) -> Any:
    """A document as a page shows it to staff: names to their first character, 身份证号 and
    phone numbers to their ends (enough to match a paper in hand), everything else as it is."""
    if isinstance(value, Mapping):
        return {k: masked_for_display(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked_for_display(v, key) for v in value]
    if not isinstance(value, str) or not value:
        return value
    if key is not None and key.lower() in _NAME_KEYS:
        return value[0] + "*" * (len(value) - 1)
    shown = mask_text(value)
    if key is not None and key.lower() in _PERSONAL_KEY_NAMES and shown == value:
        return "*" * max(len(value) - 4, 0) + value[-4:]  # not shaped like one: still masked
    return shown


def _redact(value: Any, key: str | None) -> Any:
    if key is not None and (_SECRET_KEY_NAME.search(key) or key.lower() in _PERSONAL_KEY_NAMES):
        return MASK if value not in (None, "") else value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, None) for v in value]
    return value


def redact_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: personal data and secrets never reach the renderer."""
    for key in list(event_dict):
        event_dict[key] = _redact(event_dict[key], key if key != "event" else None)
    return event_dict


def summarise_exception(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: an exception as its type (and HTTP status, if it has one), never
    a traceback or its message. aiohttp logs a malformed request's parse error with the bytes
    that caused it, which are a stranger's and may hold personal data."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    error = exc_info[1] if isinstance(exc_info, tuple) else exc_info
    if isinstance(error, BaseException):
        event_dict["error_type"] = type(error).__name__
        status = getattr(error, "status", getattr(error, "code", None))  # aiohttp: code
        if isinstance(status, int) and 100 <= status < 600:
            event_dict["status"] = status
    return event_dict


class ClientFaultsAsWarnings(logging.Filter):
    """aiohttp logs a request that does not parse as HTTP at ERROR. That is the client's fault
    (a scanner, a broken proxy), not ours: WARNING, so that ERROR lines stay the ones an
    operator must act on, and one stranger cannot fill them."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        status = getattr(error, "code", None)  # aiohttp's HttpProcessingError
        if record.levelno > logging.WARNING and isinstance(status, int) and 400 <= status < 500:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            return logging.getLogger(record.name).isEnabledFor(logging.WARNING)
        return True


def _orjson_dumps(obj: Any, **_kw: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def processors(render: Literal["json", "console"]) -> list[Any]:
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if render == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        summarise_exception,
        redact_personal_data,
        renderer,
    ]


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: TextIO | None = None,
) -> None:
    out = stream or sys.stderr
    render: Literal["json", "console"] = (
        ("console" if out.isatty() else "json") if fmt == "auto" else fmt
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=processors(render),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per line, newline included (print() makes two): the workers of
        # ``serve --workers`` share one stderr, and two writes let their lines interleave.
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Third-party stdlib loggers go through the same chain (redaction included) and never run
    # at DEBUG: zeep dumps whole envelopes there.
    chain = processors(render)
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=chain[:-2],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact_personal_data,
                chain[-1],
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    for noisy in ("zeep", "zeep.transports", "zeep.xsd", "httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.INFO))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    server.filters[:] = [ClientFaultsAsWarnings()]


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
