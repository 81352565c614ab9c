"""The trace id of the listing being worked on, carried into every log line."""

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

current_trace_id: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="-")


@contextmanager
def trace(trace_id: str | None) -> Iterator[None]:
    token = current_trace_id.set(trace_id or "-")
    try:
        yield
    finally:
        current_trace_id.reset(token)


class TraceIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "trace_id", None):
            record.trace_id = current_trace_id.get()
        return True
