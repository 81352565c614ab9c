"""What is being worked on (the listing's trace id, and where known the listing, seller, case and
detection model version), carried into every log line and into the tasks sent meanwhile
(moderation_portal.core.celery_context)."""

import contextvars
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

NO_TRACE = "-"  # what the text format shows when no trace id is known

current_trace_id: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default=NO_TRACE)
current_listing_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "listing_id", default=None
)
current_seller_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "seller_id", default=None
)
current_case_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "case_id", default=None
)
current_model_version: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "model_version", default=None
)

# The fields every log record carries, in the order the JSON format writes them.
_VARS: dict[str, contextvars.ContextVar[Any]] = {
    "trace_id": current_trace_id,
    "listing_id": current_listing_id,
    "seller_id": current_seller_id,
    "case_id": current_case_id,
    "model_version": current_model_version,
}
FIELDS: tuple[str, ...] = tuple(_VARS)

Tokens = list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]]


def context_enter(fields: Mapping[str, object]) -> Tokens:
    """Set the given fields (None or "" clears one: it is not known here); fields not given
    keep their value. Returns what `context_leave` needs to put the previous values back."""
    unknown = set(fields) - set(_VARS)
    if unknown:
        raise TypeError(f"unknown log context fields: {', '.join(sorted(unknown))}")
    tokens: Tokens = []
    for name, value in fields.items():
        var = _VARS[name]
        if value is None or value == "":
            value = NO_TRACE if name == "trace_id" else None
        tokens.append((var, var.set(value)))
    return tokens


def context_leave(tokens: Tokens) -> None:
    for var, token in reversed(tokens):
        var.reset(token)


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Within the block, log records (and tasks sent) carry these fields."""
    tokens = context_enter(fields)
    try:
        yield
    finally:
        context_leave(tokens)


@contextmanager
def trace(trace_id: str | None, **fields: object) -> Iterator[None]:
    """The trace id (None: no trace) and any other known fields, for the block."""
    with log_context(trace_id=trace_id, **fields):
        yield


def context_current() -> dict[str, object]:
    """The fields set now, for carrying them elsewhere (a task's headers)."""
    out: dict[str, object] = {}
    for name, var in _VARS.items():
        value = var.get()
        if value is not None and not (name == "trace_id" and value == NO_TRACE):
            out[name] = value
    return out


class TraceIdFilter(logging.Filter):
    """Puts the context's fields on every record (a field given as `extra` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "trace_id", None):
            record.trace_id = current_trace_id.get()
        for name in FIELDS[1:]:
            if getattr(record, name, None) is None:
                setattr(record, name, _VARS[name].get())
        return True
