"""503, not 500, when the database cannot be reached or the connection pool is exhausted.

Both are conditions a client should retry: PostgreSQL restarting or refusing connections, a
connection dropped mid-request, or every pooled connection of this process in use for longer
than `DB_POOL_TIMEOUT_SECONDS`. The API answers in its one error shape
(`{"error": {"code", "message"}}`) with `Retry-After`; pages answer a short 503 page. Any other
uncaught error on the API is a 500 in the same shape (never Django's HTML page).

Exceptions raised in an API view reach `core.api.exception_handler`; those raised anywhere else
(middleware loading a session, a page view) reach Django's `handler500`, which is `server_error`
here.
"""

import logging
import sys
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import loader
from django.views import defaults

logger = logging.getLogger(__name__)

POOL_EXHAUSTED = "pool_exhausted"
DATABASE_UNAVAILABLE = "database_unavailable"

MESSAGES = {
    POOL_EXHAUSTED: "Every database connection of this server is busy; try again shortly.",
    DATABASE_UNAVAILABLE: "The database is unavailable; try again shortly.",
}


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _pool_full() -> bool:
    """Whether this process's pool holds all the connections it may: a wait then means every one
    is busy. Fewer, and the pool could not open more (the database refuses or is down)."""
    from django.db import connection

    pool = getattr(connection, "pool", None)
    if pool is None:
        return True
    stats: dict[str, int] = pool.get_stats()
    return stats.get("pool_size", 0) >= stats.get("pool_max", 0)


def unavailable_reason(exc: BaseException | None) -> str | None:
    """`pool_exhausted` or `database_unavailable` when `exc` (or what caused it) says the
    database cannot serve this request now; None for any other error."""
    reason = None
    for link in _chain(exc):
        if type(link).__name__ == "PoolTimeout":  # psycopg_pool, imported only where pooled
            return POOL_EXHAUSTED if _pool_full() else DATABASE_UNAVAILABLE
        driver = type(link).__module__.startswith("psycopg") and type(link).__name__ in {
            "OperationalError",
            "InterfaceError",
        }
        if driver or isinstance(link, (OperationalError, InterfaceError)):
            reason = DATABASE_UNAVAILABLE
    return reason


def retry_after() -> str:
    return str(settings.DB_UNAVAILABLE_RETRY_AFTER_SECONDS)


def count(reason: str) -> None:
    from moderation_portal.core import metrics

    metrics.db_unavailable(reason)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def server_error(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Django's handler500: 503 where the database is the cause, else the usual 500; on the API
    both in the one error shape."""
    reason = unavailable_reason(sys.exc_info()[1])
    if reason is not None:
        count(reason)
        logger.warning("answered 503 %s for %s", reason, request.path)
        if _is_api(request):
            response: HttpResponse = JsonResponse(
                {"error": {"code": reason, "message": MESSAGES[reason]}}, status=503
            )
        else:
            body = loader.render_to_string("503.html", {"message": MESSAGES[reason]})
            response = HttpResponse(body, status=503)
        response["Retry-After"] = retry_after()
        return response
    if _is_api(request):
        return JsonResponse(
            {"error": {"code": "server_error", "message": "The server failed to answer."}},
            status=500,
        )
    return defaults.server_error(request, *args, **kwargs)
