"""The JSON log format (LOG_FORMAT=json): one JSON object per line, for log shippers.

Listing text, seller statements and LLM output reach log messages as arguments; JSON escapes
every control character and, written ASCII-only, every Unicode line separator too, so one
record is always exactly one line. The formatter never raises: a record it cannot format fully
still comes out as a line saying what went wrong.
"""

import json
import logging
import logging.config
from datetime import UTC, datetime

from moderation_portal.core.tracing import FIELDS, NO_TRACE

# Attributes every LogRecord has; anything else on a record came from `extra` (or a filter).
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
_CORE = ("time", "level", "logger", "message", *FIELDS, "exc_info", "stack_info")
_SKIP = _STANDARD | set(_CORE)
_MAX_EXTRA_CHARS = 10_000  # a huge extra value is cut rather than flooding the line


def _text(value: object) -> str:
    """str() of anything, even an object whose __str__ raises."""
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a log line must come out whatever the value
        try:
            return repr(value)
        except Exception:  # noqa: BLE001
            return f"<unprintable {type(value).__name__}>"


def _plain(value: object) -> object:
    """The value when JSON can hold it as it is, else its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return _text(value)[:_MAX_EXTRA_CHARS]
    if len(encoded) > _MAX_EXTRA_CHARS:
        return encoded[:_MAX_EXTRA_CHARS]
    return value


def _time(created: float) -> str:
    stamp = datetime.fromtimestamp(created, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception as exc:  # noqa: BLE001 - a bad format string must not lose the line
        # A format string and arguments that do not match: keep both rather than lose the line.
        return (
            f"{_text(record.msg)} (arguments {_text(record.args)} could not be formatted: "
            f"{type(exc).__name__})"
        )


class JsonFormatter(logging.Formatter):
    """time (ISO 8601 UTC, milliseconds), level, logger, message, trace_id, listing_id,
    seller_id, case_id, model_version (null when not known), exc_info and stack_info when there
    are some, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            return self._format(record)
        except Exception as exc:  # noqa: BLE001 - the formatter never raises
            fallback = {
                "time": _time(getattr(record, "created", 0.0) or 0.0),
                "level": _text(getattr(record, "levelname", "ERROR")),
                "logger": _text(getattr(record, "name", "")),
                "message": _text(getattr(record, "msg", "")),
                "format_error": f"{type(exc).__name__}: {_text(exc)}",
            }
            return json.dumps(fallback, ensure_ascii=True, default=_text)

    def _format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": _time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if name == "trace_id" and value == NO_TRACE:
                value = None
            out[name] = _plain(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _SKIP and not key.startswith("_"):
                out[_text(key)] = _plain(value)
        return json.dumps(out, ensure_ascii=True, default=_text)


def logging_configure(config: dict[str, object]) -> None:
    """Django's LOGGING_CONFIG: the LOGGING dict, and with the JSON format Python's warnings
    logged too (printed as they are, they would be lines that are not JSON)."""
    from django.conf import settings

    logging.config.dictConfig(config)
    if settings.LOG_FORMAT == "json":
        logging.captureWarnings(True)
