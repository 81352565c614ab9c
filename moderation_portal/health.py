from django.conf import settings
from django.db import connection
from django.http import JsonResponse


def healthz(request):
    """Liveness: the process answers."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """Readiness: the database and the broker answer. 503 names what is down."""
    checks: dict[str, dict] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True, "vendor": connection.vendor}
    except Exception as exc:  # noqa: BLE001
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    pool = getattr(connection, "pool", None)  # this process's psycopg pool, where pooled
    if pool is not None:
        stats = pool.get_stats()
        checks["database"]["pool"] = {
            "min_size": stats.get("pool_min"),
            "max_size": stats.get("pool_max"),
            "open": stats.get("pool_size"),
            "idle": stats.get("pool_available"),
            "waiting": stats.get("requests_waiting", 0),
        }
    if settings.CELERY_TASK_ALWAYS_EAGER:
        checks["broker"] = {"ok": True, "mode": "eager (embedded, in process)"}
    else:
        try:
            import redis

            client = redis.Redis.from_url(
                settings.CELERY_BROKER_URL, socket_connect_timeout=2, socket_timeout=2
            )
            client.ping()
            checks["broker"] = {"ok": True, "mode": "redis"}
        except Exception as exc:  # noqa: BLE001
            checks["broker"] = {"ok": False, "mode": "redis", "error": type(exc).__name__}
    ok = all(c["ok"] for c in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )
