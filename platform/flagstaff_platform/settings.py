"""Django settings of the Flagstaff platform, read from the environment.

Every setting that differs between a laptop and production comes from an
environment variable (docs/platform.md lists them). With none set, the
embedded defaults need no server at all: SQLite under ``var/``, the in-memory
Channels layer, and Celery on kombu's filesystem transport under
``var/celery/``. Setting ``DATABASE_URL`` (Postgres) and ``REDIS_URL`` (the
Channels layer and the Celery broker) gives the production shape.

The platform keeps no flag state of its own: flags, projects, environments,
segments and config live in the core, reached at ``FLAGSTAFF_ENDPOINTS``
through ``flags.core``. Django's database holds only people, sessions and
API tokens.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("FLAGSTAFF_VAR_DIR", BASE_DIR / "var")).resolve()

DEFAULT_CORE_ENDPOINTS = "127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379"


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _secret_key() -> str:
    """``SECRET_KEY`` from the environment, else one generated once and kept in ``var/secret-key``."""
    from_env = os.environ.get("SECRET_KEY", "")
    if from_env:
        return from_env
    path = VAR_DIR / "secret-key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    candidate = secrets.token_urlsafe(50)
    try:  # O_EXCL: concurrent first starts (web, worker, beat) agree on one key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(candidate + "\n")
    return candidate


SECRET_KEY = _secret_key()
DEBUG = _env_bool("DEBUG", False)
ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "guardian",
    "flagstaff_platform",
    "flags",
    "discovery",
]

MIDDLEWARE = [
    "flags.metrics.metrics_middleware",  # /metrics: requests by view and status
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]

ROOT_URLCONF = "flagstaff_platform.urls"
ASGI_APPLICATION = "flagstaff_platform.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "frontend" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# -- Django's own tables (people, sessions, tokens): SQLite embedded, Postgres in production --

DATABASES: dict[str, Any] = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", "") or f"sqlite:///{VAR_DIR / 'platform.sqlite3'}",
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "0")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Several processes (web, worker, beat, migrate) share the file.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# -- the core ------------------------------------------------------------------------------

FLAGSTAFF_ENDPOINTS = _env_list("FLAGSTAFF_ENDPOINTS", DEFAULT_CORE_ENDPOINTS)
"""The core members' client endpoints (``host:port`` or URLs), tried in order with failover."""
FLAGSTAFF_CORE_USER = os.environ.get("FLAGSTAFF_CORE_USER") or None
FLAGSTAFF_CORE_PASSWORD = os.environ.get("FLAGSTAFF_CORE_PASSWORD") or None
FLAGSTAFF_CORE_TIMEOUT = float(os.environ.get("FLAGSTAFF_CORE_TIMEOUT", "5"))
"""Seconds one call to the core may take (reads are retried on other members within it)."""
FLAGSTAFF_CA_FILE = os.environ.get("FLAGSTAFF_CA_FILE") or None
"""PEM CA that signed the members' client certificates: the core is then reached over TLS."""
FLAGSTAFF_CERT_FILE = os.environ.get("FLAGSTAFF_CERT_FILE") or None
FLAGSTAFF_KEY_FILE = os.environ.get("FLAGSTAFF_KEY_FILE") or None
"""The platform's client certificate and key, for members started with ``--client-cert-auth``."""
FLAGSTAFF_LIVE_HEARTBEAT_SECONDS = float(os.environ.get("FLAGSTAFF_LIVE_HEARTBEAT_SECONDS", "5"))
"""Seconds between live-update heartbeats on each websocket subscription (``flags.live``)."""

# -- Redis: the Channels layer and the Celery broker, when configured ------------------------

REDIS_URL = os.environ.get("REDIS_URL", "")

if REDIS_URL:
    CHANNEL_LAYERS: dict[str, Any] = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Django's cache: shared counters such as login failures (flags.login_throttle) must be seen by
# every web process, so Redis when configured; process-local memory otherwise.
CACHES: dict[str, Any] = (
    {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    if REDIS_URL else
    {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
)

CELERY_DATA_DIR = VAR_DIR / "celery"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {}
else:
    # kombu's filesystem transport: producers and consumers share one folder, no server.
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_DATA_DIR / "queue"),
        "data_folder_out": str(CELERY_DATA_DIR / "queue"),
        "processed_folder": str(CELERY_DATA_DIR / "processed"),
        "control_folder": str(CELERY_DATA_DIR / "control"),
        "store_processed": False,
    }
    for _folder in ("queue", "processed", "control"):
        (CELERY_DATA_DIR / _folder).mkdir(parents=True, exist_ok=True)
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(CELERY_DATA_DIR / "beat-schedule")
CELERY_BEAT_SCHEDULE: dict[str, Any] = {
    "core-health": {"task": "flags.tasks.check_core_health", "schedule": 60.0},
    # discovery.tasks.CHECK_TICK_SECONDS: sends the instances' due health checks to the workers.
    "discovery-health-checks": {"task": "discovery.tasks.schedule_health_checks", "schedule": 1.0},
    "schedules": {"task": "flags.tasks.run_schedules",
                  "schedule": float(os.environ.get("FLAGSTAFF_SCHEDULER_TICK_SECONDS", "5"))},
}
CELERY_TIMEZONE = "UTC"
# With LOG_FORMAT=json the worker keeps Django's LOGGING instead of installing its own handlers.
CELERY_WORKER_HIJACK_ROOT_LOGGER = os.environ.get("LOG_FORMAT", "text") != "json"
FLAGSTAFF_WORKER_METRICS_PORT = int(os.environ.get("FLAGSTAFF_WORKER_METRICS_PORT", "0") or 0)
"""A Celery worker serves its Prometheus metrics on this port (0: not at all)."""

# -- operations: schedules, webhooks, backups, stale flags (docs/operations.md) ----------------

FLAGSTAFF_BACKUP_DIR = Path(os.environ.get("FLAGSTAFF_BACKUP_DIR", VAR_DIR / "backups"))
"""Where the cluster page's and the scheduled backups are written (``flags.cluster``)."""
FLAGSTAFF_BACKUP_INTERVAL_SECONDS = float(os.environ.get("FLAGSTAFF_BACKUP_INTERVAL_SECONDS", "86400"))
"""Seconds between scheduled backups (0: none)."""
FLAGSTAFF_BACKUP_KEEP = int(os.environ.get("FLAGSTAFF_BACKUP_KEEP", "14"))
"""How many backups the scheduled task keeps (the newest)."""
if FLAGSTAFF_BACKUP_INTERVAL_SECONDS > 0:
    CELERY_BEAT_SCHEDULE["backups"] = {"task": "flags.tasks.backup_core",
                                       "schedule": FLAGSTAFF_BACKUP_INTERVAL_SECONDS}
FLAGSTAFF_WEBHOOK_TICK_SECONDS = float(os.environ.get("FLAGSTAFF_WEBHOOK_TICK_SECONDS", "2"))
FLAGSTAFF_WEBHOOK_BACKOFF_SECONDS = float(os.environ.get("FLAGSTAFF_WEBHOOK_BACKOFF_SECONDS", "10"))
"""A failed delivery is retried after this, doubling on each further failure."""
FLAGSTAFF_WEBHOOK_MAX_ATTEMPTS = int(os.environ.get("FLAGSTAFF_WEBHOOK_MAX_ATTEMPTS", "8"))
FLAGSTAFF_WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("FLAGSTAFF_WEBHOOK_TIMEOUT_SECONDS", "10"))
CELERY_BEAT_SCHEDULE["webhooks"] = {"task": "flags.tasks.run_webhooks",
                                    "schedule": FLAGSTAFF_WEBHOOK_TICK_SECONDS}
FLAGSTAFF_STALE_UNCHANGED_SECONDS = float(os.environ.get("FLAGSTAFF_STALE_UNCHANGED_SECONDS",
                                                         str(30 * 86400)))
"""A flag not changed for this long is marked potentially stale in the flag list."""
FLAGSTAFF_STALE_UNEVALUATED_SECONDS = float(os.environ.get("FLAGSTAFF_STALE_UNEVALUATED_SECONDS",
                                                           str(7 * 86400)))
"""A flag no SDK reported evaluating for this long is marked potentially stale."""

# -- REST API --------------------------------------------------------------------------------

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Bearer first: an unauthenticated request gets 401 with `WWW-Authenticate: Bearer`.
        # Flagstaff's API tokens (flags.tokens), not rest_framework.authtoken.
        "flags.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["flags.api.errors.BoundedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "flags.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SPECTACULAR_SETTINGS: dict[str, Any] = {
    "TITLE": "Flagstaff REST API",
    "DESCRIPTION": "Projects, environments, feature flags, segments and config keys, stored in the "
    "Flagstaff core. See docs/rest-api.md.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
}

# A request body may be at most 1 MiB (a flag document at most 256 KiB; see flags.engine).
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# -- people --------------------------------------------------------------------------------

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
ANONYMOUS_USER_NAME = None  # django-guardian: no anonymous user row

# Login rate limiting and lockout (flags.login_throttle): per username and per client address.
FLAGSTAFF_LOGIN_MAX_FAILURES = int(os.environ.get("FLAGSTAFF_LOGIN_MAX_FAILURES", "5"))
FLAGSTAFF_LOGIN_MAX_FAILURES_PER_IP = int(os.environ.get("FLAGSTAFF_LOGIN_MAX_FAILURES_PER_IP", "50"))
FLAGSTAFF_LOGIN_LOCKOUT_SECONDS = int(os.environ.get("FLAGSTAFF_LOGIN_LOCKOUT_SECONDS", "900"))

# -- security headers and cookies (docs/access-control.md) ------------------------------------
#
# Served on loopback only (the default ALLOWED_HOSTS: `flagstaff up`, tests), plain HTTP is
# fine. Anywhere else, and not in DEBUG, the platform assumes HTTPS: secure cookies, HSTS and
# a redirect to https (FLAGSTAFF_SECURE=0 turns that off; FLAGSTAFF_PROXY_SSL_HEADER=1 trusts a
# TLS-terminating proxy's X-Forwarded-Proto).

_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
FLAGSTAFF_SECURE = _env_bool(
    "FLAGSTAFF_SECURE", not DEBUG and not set(ALLOWED_HOSTS) <= _LOOPBACK_HOSTS)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", FLAGSTAFF_SECURE)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", FLAGSTAFF_SECURE)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]  # probes and Prometheus: plain HTTP
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000" if FLAGSTAFF_SECURE
                                         else "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", FLAGSTAFF_SECURE)
SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", False)
if _env_bool("FLAGSTAFF_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# HSTS preload is a commitment to the browsers' list: opt in with SECURE_HSTS_PRELOAD=1.
SILENCED_SYSTEM_CHECKS = ["security.W021"]

# -- static files (served by the ASGI app itself; no build step) -------------------------------

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "frontend" / "static"]
STATIC_ROOT = VAR_DIR / "static"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"

LOG_FORMAT = os.environ.get("LOG_FORMAT", "text")
"""``json``: one JSON object per log line (``consensus.json_logs``); anything else: plain text."""
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "consensus.json_logs.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler",
                    **({"formatter": "json"} if LOG_FORMAT == "json" else {})},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
