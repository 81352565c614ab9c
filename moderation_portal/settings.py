"""Settings for the moderation portal.

The defaults are the embedded mode (SQLite, eager Celery, in-memory channel layer), which
`make demo` runs on a fresh machine. Production is chosen by the environment only:
`DATABASE_URL` (PostgreSQL), `REDIS_URL` (Celery broker, channel layer, cache) and friends.
"""

import hashlib
import json
import os
import secrets
from pathlib import Path

import dj_database_url
from celery.schedules import crontab

from moderation_portal.core.env import (
    ImproperEnvironment,
    envbool,
    envfloat,
    envint,
    envlist,
    envstr,
    envurl,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(envstr("PORTAL_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Prometheus multiprocess mode: every process (web, Celery workers, beat, commands) writes its
# counters to files here and `GET /metrics` reads them all. Set before anything imports
# prometheus_client, which picks its value store at import. Wipe the folder when the portal
# starts (files of processes that are gone would be summed with the live ones).
if envstr("PROMETHEUS_MULTIPROC_DIR") is None:  # unset or empty
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(VAR_DIR / "metrics")
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
METRICS_ENABLED = envbool("METRICS_ENABLED", True)
# A bearer token that opens /metrics from anywhere (loopback needs none); unset, only loopback.
METRICS_TOKEN = envstr("METRICS_TOKEN")

DATABASE_URL = envurl("DATABASE_URL", schemes={"postgres", "postgresql", "sqlite"})
REDIS_URL = envurl("REDIS_URL", schemes={"redis", "rediss"})
PRODUCTION = DATABASE_URL is not None and DATABASE_URL.startswith("postgres")

DEBUG = envbool("DEBUG", False)


def _secret_key() -> str:
    key = envstr("SECRET_KEY")
    if key:
        return key
    if PRODUCTION and not envbool("ALLOW_GENERATED_SECRET_KEY", False):
        raise ImproperEnvironment("SECRET_KEY must be set when DATABASE_URL points at PostgreSQL")
    # Embedded mode: a key generated on first start and kept beside the SQLite file.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "django_prometheus",  # web request metrics (django_http_*); its own export view is not used
    "moderation_portal.core",
    "detection",
    "llm_verify",
    "reviews",
    "active_learning",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "moderation_portal.middleware.ContentSecurityPolicyMiddleware",
]
if METRICS_ENABLED:
    # First and last, so the web metrics time the whole stack.
    MIDDLEWARE = [
        "django_prometheus.middleware.PrometheusBeforeMiddleware",
        *MIDDLEWARE,
        "django_prometheus.middleware.PrometheusAfterMiddleware",
    ]

ROOT_URLCONF = "moderation_portal.urls"
ASGI_APPLICATION = "moderation_portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "moderation_portal.core.context_processors.roles",
                "reviews.context_processors.enforcement_alert",
            ],
        },
    },
]

# PostgreSQL connections. Each process (a Daphne web process, each Celery worker child, beat, a
# command) keeps its own bounded pool (Django's psycopg pool): at most DB_POOL_MAX_SIZE
# connections, DB_POOL_MIN_SIZE kept open. A request that waits DB_POOL_TIMEOUT_SECONDS for one
# is answered 503 with Retry-After. Persistent connections (DB_CONN_MAX_AGE) are for DB_POOL=false
# only: under ASGI every request runs in its own thread, and a connection kept per thread piles
# up until PostgreSQL refuses new clients. The budget of a node and pgbouncer for many nodes:
# README "Database connections".
DB_POOL = envbool("DB_POOL", True)
DB_POOL_MIN_SIZE = envint("DB_POOL_MIN_SIZE", 1, minimum=0)
DB_POOL_MAX_SIZE = envint("DB_POOL_MAX_SIZE", 8, minimum=1)
DB_POOL_TIMEOUT_SECONDS = envfloat("DB_POOL_TIMEOUT_SECONDS", 5.0)
DB_UNAVAILABLE_RETRY_AFTER_SECONDS = envint("DB_UNAVAILABLE_RETRY_AFTER_SECONDS", 5, minimum=1)
if DB_POOL_MIN_SIZE > DB_POOL_MAX_SIZE:
    raise ImproperEnvironment("DB_POOL_MIN_SIZE must not exceed DB_POOL_MAX_SIZE")
if DB_POOL_TIMEOUT_SECONDS <= 0:
    raise ImproperEnvironment("DB_POOL_TIMEOUT_SECONDS must be above 0")

if DATABASE_URL:
    _db = dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=0 if DB_POOL else envint("DB_CONN_MAX_AGE", 0, minimum=0),
        # A connection is checked before it is handed out (with the pool, by the pool), so a
        # PostgreSQL restart costs the requests made while it is down, not the ones after.
        conn_health_checks=True,
    )
    if DB_POOL and _db["ENGINE"] == "django.db.backends.postgresql":
        _db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": DB_POOL_MIN_SIZE,
            "max_size": DB_POOL_MAX_SIZE,
            "timeout": DB_POOL_TIMEOUT_SECONDS,
        }
    if envbool("DB_PGBOUNCER", False):
        # pgbouncer in transaction mode hands each transaction any server connection: no
        # server-side cursors (Django's .iterator()) or prepared statements across transactions.
        _db["DISABLE_SERVER_SIDE_CURSORS"] = True
        _db.setdefault("OPTIONS", {})["prepare_threshold"] = None
    DATABASES = {"default": _db}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "portal.sqlite3",
            # Eager Celery and the web server share this file; wait rather than fail on a lock.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "reviews:queues"
LOGOUT_REDIRECT_URL = "login"
# Login throttling (moderation_portal/core/login_throttle.py): this many failed logins of one
# account, or from one client address (REMOTE_ADDR, IPv6 by /64; 0 counts per account only),
# within the window lock it for the window: the password is not checked, the login page answers
# 429 with Retry-After. The backend is Django's ModelBackend with that check in front.
AUTHENTICATION_BACKENDS = ["moderation_portal.core.login_throttle.ThrottledModelBackend"]
LOGIN_THROTTLE_FAILURES = envint("LOGIN_THROTTLE_FAILURES", 5, minimum=1)
LOGIN_THROTTLE_ADDRESS_FAILURES = envint("LOGIN_THROTTLE_ADDRESS_FAILURES", 50, minimum=0)
LOGIN_THROTTLE_WINDOW_SECONDS = envint("LOGIN_THROTTLE_WINDOW_SECONDS", 900, minimum=1)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = Path(envstr("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"  # never served directly: images go through a role-checked view

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = envbool("SECURE_COOKIES", PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# --- cache, Celery, Channels ------------------------------------------------------------------
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": envstr("CHANNELS_PREFIX", "portal")},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_EAGER", REDIS_URL is None)
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # Django's LOGGING (with trace ids) applies in workers
CELERY_TASK_ACKS_LATE = True  # a killed worker's task is delivered again
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SOFT_TIME_LIMIT = envint("CELERY_SOFT_TIME_LIMIT", 120, minimum=1)
CELERY_TASK_TIME_LIMIT = envint("CELERY_TIME_LIMIT", 180, minimum=1)
# A task a worker took and never acknowledged (the worker died) goes back to its queue once it is
# CELERY_VISIBILITY_TIMEOUT seconds old; every worker looks for such tasks at start and then
# every CELERY_UNACKED_RESTORE_SECONDS (kombu's own default looks only every ~100 s).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 3600),
    "unacked_restore_interval": envint("CELERY_UNACKED_RESTORE_SECONDS", 10, minimum=1),
    "unacked_restore_throttle": 1,
}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "detection.ingest_events": {"queue": "ingest"},
    "detection.enrich_*": {"queue": "enrich"},
    "detection.reference_*": {"queue": "enrich"},
    "reviews.llm_verify_case_task": {"queue": "llm"},
    "reviews.deliver_enforcements_task": {"queue": "default"},
    "reviews.submit_statements_task": {"queue": "default"},
    "core.send_unsent_tasks_task": {"queue": "default"},
}
CELERY_BEAT_SCHEDULE = {
    "release-expired-leases": {"task": "reviews.release_expired_leases_task", "schedule": 30.0},
    "deliver-enforcements": {"task": "reviews.deliver_enforcements_task", "schedule": 5.0},
    "submit-statements": {"task": "reviews.submit_statements_task", "schedule": 30.0},
    # tasks the broker refused while it was down (moderation_portal.core.unsent)
    "send-unsent-tasks": {
        "task": "core.send_unsent_tasks_task",
        "schedule": float(envint("UNSENT_TASKS_SWEEP_SECONDS", 30, minimum=1)),
    },
}

# --- the REST API ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "detection.intake.tokens.ServiceTokenAuthentication",
        "moderation_portal.core.session_auth.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "moderation_portal.core.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Moderation portal API",
    "DESCRIPTION": "Ingest of flagged listings, cases, claims and decisions.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- ingest limits and image fetching -------------------------------------------------------
INGEST_MAX_BATCH = envint("INGEST_MAX_BATCH", 500, minimum=1)
INGEST_MAX_BODY_BYTES = envint("INGEST_MAX_BODY_BYTES", 64 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = INGEST_MAX_BODY_BYTES
INGEST_MAX_TITLE_CHARS = envint("INGEST_MAX_TITLE_CHARS", 300, minimum=1)
INGEST_MAX_DESCRIPTION_CHARS = envint("INGEST_MAX_DESCRIPTION_CHARS", 10_000, minimum=1)
INGEST_MAX_IMAGES = envint("INGEST_MAX_IMAGES", 12, minimum=1)
INGEST_MAX_IMAGE_BYTES = envint("INGEST_MAX_IMAGE_BYTES", 5 * 1024 * 1024, minimum=1024)
INGEST_MAX_IMAGE_PIXELS = envint("INGEST_MAX_IMAGE_PIXELS", 40_000_000, minimum=1)
IMAGE_HOST_ALLOWLIST = envlist("IMAGE_HOST_ALLOWLIST", ["images.marketplace.example"])
IMAGE_FETCH_CONNECT_TIMEOUT = envfloat("IMAGE_FETCH_CONNECT_TIMEOUT", 3.0)
IMAGE_FETCH_READ_TIMEOUT = envfloat("IMAGE_FETCH_READ_TIMEOUT", 10.0)
IMAGE_FETCH_CA_FILE = envstr("IMAGE_FETCH_CA_FILE")  # a private CA for the image hosts, if any

# --- reviews --------------------------------------------------------------------------------
CLAIM_LEASE_SECONDS = envint("CLAIM_LEASE_SECONDS", 300, minimum=10)

# --- models and enrichment (workers only) --------------------------------------------------
# The image model's config (open_clip tower, weights, per-policy heads). `make demo` builds demo
# weights here; production points it at the detection tier's released checkpoint.
DETECTION_MODEL_CONFIG = envstr(
    "DETECTION_MODEL_CONFIG", str(VAR_DIR / "models" / "demo" / "model.json")
)
REFERENCE_INDEX_DIR = Path(envstr("REFERENCE_INDEX_DIR", str(VAR_DIR / "reference-index")))
NEIGHBOURS_SHOWN = envint("NEIGHBOURS_SHOWN", 8, minimum=1)
# Neighbours compare listings by image and text together: similarity = (1 - w) * cosine of the
# image embeddings + w * cosine of the listing-text embeddings (all-MiniLM-L6-v2).
NEIGHBOUR_TEXT_WEIGHT = envfloat("NEIGHBOUR_TEXT_WEIGHT", 0.5)
ENRICH_MAX_RETRIES = envint("ENRICH_MAX_RETRIES", 3, minimum=0)
TRITON_TIMEOUT_SECONDS = envfloat("TRITON_TIMEOUT_SECONDS", 5.0)
TRITON_MODEL = envstr("TRITON_MODEL", "image_embedder")

# --- remote systems (optional) -------------------------------------------------------------
TRITON_URL = envstr("TRITON_URL")
LLM_BASE_URL = envurl("LLM_BASE_URL", schemes={"http", "https"})
LLM_MODEL = envstr("LLM_MODEL")
LLM_API_KEY = envstr("LLM_API_KEY")
LLM_READ_TIMEOUT_SECONDS = envfloat("LLM_READ_TIMEOUT_SECONDS", 60.0)
LLM_DEADLINE_SECONDS = envfloat("LLM_DEADLINE_SECONDS", 150.0)
LLM_MAX_CONCURRENCY = envint("LLM_MAX_CONCURRENCY", 2, minimum=1)
LLM_BREAKER_FAILURES = envint("LLM_BREAKER_FAILURES", 5, minimum=1)
LLM_BREAKER_COOLDOWN_SECONDS = envfloat("LLM_BREAKER_COOLDOWN_SECONDS", 30.0)
LLM_PROMPT_PRICE_PER_1K = envfloat("LLM_PROMPT_PRICE_PER_1K", 0.0)
LLM_COMPLETION_PRICE_PER_1K = envfloat("LLM_COMPLETION_PRICE_PER_1K", 0.0)
# When enrichment has not finished by then, the LLM verifies with what there is.
LLM_WAIT_FOR_ENRICHMENT_SECONDS = envint("LLM_WAIT_FOR_ENRICHMENT_SECONDS", 120, minimum=0)

# --- enforcement delivery to the marketplace (Standard Webhooks) -----------------------------
ENFORCEMENT_WEBHOOK_URL = envurl("ENFORCEMENT_WEBHOOK_URL", schemes={"http", "https"})
# One or more `whsec_` secrets (rotation); parsed when a delivery runs (webhooks.parse_secrets).
ENFORCEMENT_WEBHOOK_SECRET = envstr("ENFORCEMENT_WEBHOOK_SECRET")


def _retry_schedule(name: str, default: str) -> tuple[int, ...]:
    """Seconds to wait before each attempt (the first is the first attempt's delay)."""
    value = envstr(name, default) or default
    try:
        schedule = tuple(int(part) for part in value.split(","))
    except ValueError as exc:
        raise ImproperEnvironment(f"{name}={value!r} is not comma-separated seconds") from exc
    if any(seconds < 0 for seconds in schedule):
        raise ImproperEnvironment(f"{name}={value!r} has a negative delay")
    return schedule


ENFORCEMENT_RETRY_SCHEDULE = _retry_schedule(
    "ENFORCEMENT_RETRY_SCHEDULE", "0,5,300,1800,7200,18000,36000,50400,72000,86400"
)
ENFORCEMENT_CONNECT_TIMEOUT_SECONDS = envfloat("ENFORCEMENT_CONNECT_TIMEOUT_SECONDS", 5.0)
ENFORCEMENT_READ_TIMEOUT_SECONDS = envfloat("ENFORCEMENT_READ_TIMEOUT_SECONDS", 10.0)
APPEAL_WINDOW_DAYS = envint("APPEAL_WINDOW_DAYS", 184, minimum=1)
APPEAL_SLA_HOURS = envint("APPEAL_SLA_HOURS", 72, minimum=1)
APPEAL_LEASE_SECONDS = envint("APPEAL_LEASE_SECONDS", 900, minimum=60)
APPEAL_MAX_STATEMENT_CHARS = envint("APPEAL_MAX_STATEMENT_CHARS", 5000, minimum=100)

# --- drift alarms (reviews/monitoring/drift.py) and their alert webhook ------------------------
DRIFT_RECENT_HOURS = envint("DRIFT_RECENT_HOURS", 24, minimum=1)
DRIFT_REFERENCE_DAYS = envint("DRIFT_REFERENCE_DAYS", 14, minimum=1)
DRIFT_MIN_REFERENCE_EVENTS = envint("DRIFT_MIN_REFERENCE_EVENTS", 1000, minimum=1)  # PSI
DRIFT_MIN_RECENT_EVENTS = envint("DRIFT_MIN_RECENT_EVENTS", 300, minimum=1)  # PSI
DRIFT_MIN_RATE_EVENTS = envint("DRIFT_MIN_RATE_EVENTS", 200, minimum=1)  # flag rate, reference
DRIFT_KS_ALPHA = envfloat("DRIFT_KS_ALPHA", 0.001)
DRIFT_FLAG_RATE_ALPHA = envfloat("DRIFT_FLAG_RATE_ALPHA", 0.001)
for _name in ("DRIFT_KS_ALPHA", "DRIFT_FLAG_RATE_ALPHA"):
    if not 0 < globals()[_name] < 1:
        raise ImproperEnvironment(f"{_name}={globals()[_name]} is not a probability in (0, 1)")
ALERT_WEBHOOK_URL = envurl("ALERT_WEBHOOK_URL", schemes={"http", "https"})
# One or more `whsec_` secrets (rotation), as ENFORCEMENT_WEBHOOK_SECRET.
ALERT_WEBHOOK_SECRET = envstr("ALERT_WEBHOOK_SECRET")
if bool(ALERT_WEBHOOK_URL) != bool(ALERT_WEBHOOK_SECRET):
    raise ImproperEnvironment("ALERT_WEBHOOK_URL and ALERT_WEBHOOK_SECRET go together")
ALERT_RETRY_SCHEDULE = _retry_schedule(
    "ALERT_RETRY_SCHEDULE", "0,10,60,300,900,1800,3600,7200,14400,28800"
)
ALERT_TIMEOUT_SECONDS = envfloat("ALERT_TIMEOUT_SECONDS", 5.0)
CELERY_BEAT_SCHEDULE["drift-check"] = {
    "task": "reviews.drift_check_task",
    "schedule": crontab(minute=5),  # hourly
}
CELERY_BEAT_SCHEDULE["deliver-drift-alerts"] = {
    "task": "reviews.deliver_drift_alerts_task",
    "schedule": 30.0,
}
CELERY_TASK_ROUTES["reviews.drift_check_task"] = {"queue": "default"}
CELERY_TASK_ROUTES["reviews.deliver_drift_alerts_task"] = {"queue": "default"}

# --- statements of reasons to the EU DSA Transparency Database (optional) --------------------
DSA_TDB_URL = envurl("DSA_TDB_URL", schemes={"http", "https"})
DSA_TDB_TOKEN = envstr("DSA_TDB_TOKEN")
DSA_TDB_BATCH_SIZE = envint("DSA_TDB_BATCH_SIZE", 100, minimum=1)
DSA_TDB_TIMEOUT_SECONDS = envfloat("DSA_TDB_TIMEOUT_SECONDS", 30.0)
# Statements' platform unique identifiers are "<prefix>-decision-<decision id>".
DSA_PUID_PREFIX = envstr("DSA_PUID_PREFIX", "mp") or "mp"

# --- QA sampling ----------------------------------------------------------------------------
QA_HUMAN_SAMPLE_RATE = envfloat("QA_HUMAN_SAMPLE_RATE", 0.02)
QA_DISAGREEMENT_FACTOR = envfloat("QA_DISAGREEMENT_FACTOR", 3.0)

# --- the labeling queue (active_learning.labeling) -----------------------------------------
LABELING_DAILY_BUDGET = envint("LABELING_DAILY_BUDGET", 200, minimum=0)
LABELING_DRAW_HOUR = envint("LABELING_DRAW_HOUR", 4, minimum=0)
if LABELING_DRAW_HOUR > 23:
    raise ImproperEnvironment(f"LABELING_DRAW_HOUR={LABELING_DRAW_HOUR} is not an hour (0-23)")
LABELING_LEASE_SECONDS = envint("LABELING_LEASE_SECONDS", 600, minimum=60)
# The pool a draw chooses from: cases closed without a decision in the last N days, newest first.
LABELING_POOL_DAYS = envint("LABELING_POOL_DAYS", 14, minimum=1)
LABELING_POOL_MAX = envint("LABELING_POOL_MAX", 20_000, minimum=1)


def _strategy_shares(name: str, default: dict[str, float]) -> dict[str, float]:
    """Strategy -> share of the daily budget, as JSON; the shares are non-negative numbers."""
    value = envstr(name)
    if value is None:
        return dict(default)
    try:
        shares = json.loads(value)
    except ValueError as exc:
        raise ImproperEnvironment(f"{name} is not JSON: {exc}") from exc
    if not isinstance(shares, dict) or not shares:
        raise ImproperEnvironment(f"{name} must map strategy names to shares")
    unknown = set(shares) - set(default)
    if unknown:
        raise ImproperEnvironment(f"{name} names unknown strategies: {sorted(unknown)}")
    for key, share in shares.items():
        if isinstance(share, bool) or not isinstance(share, int | float) or share < 0:
            raise ImproperEnvironment(f"{name}: the share of {key} must be a number >= 0")
    if sum(shares.values()) <= 0:
        raise ImproperEnvironment(f"{name}: the shares add up to nothing")
    return {key: float(share) for key, share in shares.items()}


LABELING_STRATEGY_SHARES = _strategy_shares(
    "LABELING_STRATEGY_SHARES",
    # chosen with the offline replay (bench/active_learning.py): on its data sets hard negatives
    # alone do not learn a boundary, so they get a small share beside uncertainty and diversity
    {"uncertainty": 0.45, "hard_negative": 0.05, "diversity": 0.4, "random": 0.1},
)
CELERY_BEAT_SCHEDULE["labeling-draw"] = {
    "task": "active_learning.sample_for_labeling_task",
    "schedule": crontab(hour=LABELING_DRAW_HOUR, minute=0),
}

# --- training labels and their nightly export (active_learning.labels) ----------------------
# Labels name people by an HMAC of their user id under this key ("rev-<12 hex>"); by default a
# derivation of SECRET_KEY, so it is stable wherever SECRET_KEY is. Changing it unlinks every
# pseudonym from earlier exports.
LABEL_PSEUDONYM_KEY = (
    envstr("LABEL_PSEUDONYM_KEY")
    or hashlib.sha256(f"label-pseudonym:{SECRET_KEY}".encode()).hexdigest()
)
LABEL_EXPORT_DIR = Path(envstr("LABEL_EXPORT_DIR", str(VAR_DIR / "exports")))
LABEL_EXPORT_HOUR = envint("LABEL_EXPORT_HOUR", 2, minimum=0)
if LABEL_EXPORT_HOUR > 23:
    raise ImproperEnvironment(f"LABEL_EXPORT_HOUR={LABEL_EXPORT_HOUR} is not an hour (0-23)")
# Easy negatives kept per positive in each split (the rest are left out, chosen by a hash of the
# label id, so the same labels are kept every night).
EXPORT_EASY_NEGATIVE_RATIO = envfloat("EXPORT_EASY_NEGATIVE_RATIO", 3.0)
if EXPORT_EASY_NEGATIVE_RATIO < 0:
    raise ImproperEnvironment("EXPORT_EASY_NEGATIVE_RATIO must be >= 0")
# Shares of listings (by the time of their first label) in the validation and test splits.
EXPORT_VALIDATION_FRACTION = envfloat("EXPORT_VALIDATION_FRACTION", 0.15)
EXPORT_TEST_FRACTION = envfloat("EXPORT_TEST_FRACTION", 0.15)
if (
    min(EXPORT_VALIDATION_FRACTION, EXPORT_TEST_FRACTION) < 0
    or EXPORT_VALIDATION_FRACTION + EXPORT_TEST_FRACTION >= 1
):
    raise ImproperEnvironment("EXPORT_VALIDATION_FRACTION + EXPORT_TEST_FRACTION must be below 1")
CELERY_BEAT_SCHEDULE["label-export"] = {
    "task": "active_learning.export_labels_task",
    "schedule": crontab(hour=LABEL_EXPORT_HOUR, minute=0),
}
CELERY_TASK_ROUTES["active_learning.export_labels_task"] = {"queue": "default"}

# --- logging: every line about a listing carries its trace id -------------------------------
# text: "time level logger trace=<trace id> message"; json: one object per line with the trace id
# and, where known, listing, seller, case and model version (moderation_portal.core.logs).
LOG_FORMAT = (envstr("LOG_FORMAT", "text") or "text").strip().lower()
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperEnvironment(
        f"LOG_FORMAT={envstr('LOG_FORMAT')!r} is not a log format (text or json)"
    )
LOGGING_CONFIG = "moderation_portal.core.logs.logging_configure"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"trace": {"()": "moderation_portal.core.tracing.TraceIdFilter"}},
    "formatters": {
        "text": {
            "format": "%(asctime)s %(levelname)s %(name)s trace=%(trace_id)s %(message)s",
        },
        "json": {"()": "moderation_portal.core.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["trace"], "formatter": LOG_FORMAT}
    },
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
