"""The one settings module, driven by environment variables.

With nothing set, the portal runs on the embedded default: SQLite and DICOM files under
``DATA_DIR``, Celery tasks in-process. Each service switches on when it is configured:
``DATABASE_URL`` (PostgreSQL), ``CELERY_BROKER_URL``/``REDIS_URL`` (real Celery workers),
``S3_BUCKET`` (S3-compatible object storage). Every variable is documented in README.md.
"""

import os
from pathlib import Path
from typing import Any

import environ
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG and env.bool("PRODUCTION", default=False):
        raise environ.ImproperlyConfigured("SECRET_KEY must be set in production")
    # Development and tests only: PRODUCTION=1 refuses to start without a real key.
    SECRET_KEY = "insecure-development-key-set-SECRET_KEY-in-production"  # noqa: S105

PRODUCTION = env.bool("PRODUCTION", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "data"))).resolve()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "auditlog",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "accounts",
    "audit",
    "imaging",
    "dicomweb",
    "dimse",
    "privacy",
    "sharing",
    "viewer",
    "patients",
]

MIDDLEWARE = [
    "dicomweb.cors.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "accounts.middleware.RequireSecondFactorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'portal.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default must work on a fresh checkout: SQLite creates the file, not
    # the folder.
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL lets the web server, the DICOM listener and imports read while one of them writes.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # Kept open between requests: closing a WAL database checkpoints and fsyncs every time.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=600)
    # A file, not memory, so servers and workers that tests start share the test database
    # (they are given its path); one per test run, so parallel runs never collide.
    DATABASES["default"]["TEST"] = {
        "NAME": str(DATA_DIR / f"test-portal-{os.getpid()}.sqlite3")
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
     "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses locked-out users before checking
    "accounts.backends.EmailOrUsernameBackend",  # ModelBackend that also takes an email
]
# Lockout after repeated failures (django-axes), per account (an email counts against the
# account it names) and per address.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=1.0)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_USERNAME_CALLABLE = "accounts.backends.lockout_username"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# TOTP second factor for everyone but patients (accounts.middleware); off only in tests.
REQUIRE_2FA = env.bool("REQUIRE_2FA", default=True)
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Imaging portal")
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "imaging:study_list"
LOGOUT_REDIRECT_URL = "login"

# --- Languages: pt-BR first, then Spanish and English ---------------------------------------
LANGUAGE_CODE = "pt-br"
LANGUAGES = [("pt-br", _("Português (Brasil)")), ("es", _("Español")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("TIME_ZONE", default="America/Sao_Paulo")
USE_I18N = True
USE_TZ = True

# --- Static files and storage ---------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]

S3_BUCKET = env.str("S3_BUCKET", default="")
DICOM_STORAGE: dict[str, Any]
if S3_BUCKET:
    DICOM_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": env.str("S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("S3_REGION", default="") or None,
            "access_key": env.str("S3_ACCESS_KEY_ID", default="") or None,
            "secret_key": env.str("S3_SECRET_ACCESS_KEY", default="") or None,
            "location": env.str("S3_PREFIX", default=""),
            "file_overwrite": False,
            "default_acl": None,
            "querystring_auth": True,
        },
    }
else:
    DICOM_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": env.str("DICOM_STORAGE_DIR", default=str(DATA_DIR / "dicom")),
            "base_url": None,
        },
    }
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(DATA_DIR / "media")},
    },
    "dicom": DICOM_STORAGE,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage",
    },
}
# Uploads above this size stream to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = env.int("FILE_UPLOAD_MAX_MEMORY_SIZE", default=2 * 1024 * 1024)
DATA_UPLOAD_MAX_NUMBER_FILES = env.int("DATA_UPLOAD_MAX_NUMBER_FILES", default=1000)
FILE_UPLOAD_TEMP_DIR = env.str("FILE_UPLOAD_TEMP_DIR", default="") or None

# --- Cache: shared by every web worker when Redis is configured (rate limits, ZIP layouts) ---
CACHE_URL = env.str("CACHE_URL", default="") or env.str("REDIS_URL", default="")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
    if CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}

# --- Download links and shares: failed token or PIN attempts allowed per address -------------
SHARING_FAILURE_LIMIT = env.int("SHARING_FAILURE_LIMIT", default=10)
SHARING_FAILURE_WINDOW = env.int("SHARING_FAILURE_WINDOW", default=900)

# --- Patient access codes (printed on exam receipts) ------------------------------------------
PATIENT_CODE_LIFETIME_DAYS = env.int("PATIENT_CODE_LIFETIME_DAYS", default=30)
PATIENT_CODE_FAILURE_WINDOW = env.int("PATIENT_CODE_FAILURE_WINDOW", default=900)
PATIENT_CODE_ADDRESS_LIMIT = env.int("PATIENT_CODE_ADDRESS_LIMIT", default=10)
PATIENT_CODE_PREFIX_LIMIT = env.int("PATIENT_CODE_PREFIX_LIMIT", default=5)

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or env.str("REDIS_URL", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = CELERY_BROKER_URL or None
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE = {
    "verify-fixity": {
        "task": "imaging.tasks.verify_fixity",
        "schedule": env.float("FIXITY_INTERVAL_SECONDS", default=24 * 3600.0),
    },
    "privacy-list-retention-due": {
        "task": "privacy.tasks.list_retention_due",
        "schedule": env.float("RETENTION_LIST_INTERVAL_SECONDS", default=24 * 3600.0),
    },
    "privacy-delete-pending-blobs": {
        "task": "privacy.tasks.delete_pending_blobs", "schedule": 3600.0,
    },
    "privacy-delete-expired-exports": {
        "task": "privacy.tasks.delete_expired_exports", "schedule": 3600.0,
    },
}

# --- Audit trail ----------------------------------------------------------------------------
# The key that signs the audit chain's head and checkpoints; keep it out of the database (and
# its backups). Empty: derived from SECRET_KEY. Set it in production.
AUDIT_CHAIN_KEY = env.str("AUDIT_CHAIN_KEY", default="")
# Reads of one study by one caller within this many idle seconds are one viewing session:
# one chained entry when it opens, a counted row while it lasts, one when it closes. 0: every
# read is its own chained entry.
AUDIT_READ_SESSION_SECONDS = env.int("AUDIT_READ_SESSION_SECONDS", default=1800)
CELERY_BEAT_SCHEDULE["audit-close-read-sessions"] = {
    "task": "audit.tasks.close_read_sessions", "schedule": 300.0,
}

# --- Fixity: stored files are re-hashed periodically and compared with their SHA-256 -------
FIXITY_MAX_AGE_DAYS = env.float("FIXITY_MAX_AGE_DAYS", default=30.0)
FIXITY_BATCH_SIZE = env.int("FIXITY_BATCH_SIZE", default=5000)

# --- DICOMweb ---------------------------------------------------------------------------------
# Origins allowed to call /dicomweb/ from a browser (a viewer on another host); ["*"] allows
# any origin without credentials. Empty: same-origin only.
DICOMWEB_CORS_ORIGINS = env.list("DICOMWEB_CORS_ORIGINS", default=[])
# Behind a reverse proxy: trust X-Forwarded-Host/-Proto so BulkDataURIs and links are right.
USE_X_FORWARDED_HOST = env.bool("USE_X_FORWARDED_HOST", default=False)
if env.bool("TRUST_X_FORWARDED_PROTO", default=PRODUCTION):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# OHIF's prebuilt viewer (bin/fetch-ohif) served at /viewer/ when present; cross-origin
# isolation (COOP/COEP on the viewer) lets OHIF use SharedArrayBuffer for MPR.
OHIF_DIST = Path(env.str("OHIF_DIST", default=str(BASE_DIR / ".cache" / "ohif" / "dist")))
OHIF_CROSS_ORIGIN_ISOLATED = env.bool("OHIF_CROSS_ORIGIN_ISOLATED", default=False)

# --- DICOM ----------------------------------------------------------------------------------
DICOM_AE_TITLE = env.str("DICOM_AE_TITLE", default="PORTAL")
DICOM_PORT = env.int("DICOM_PORT", default=11112)
# Accept associations from peers not configured in admin (first installation only).
DICOM_ALLOW_UNKNOWN_PEERS = env.bool("DICOM_ALLOW_UNKNOWN_PEERS", default=False)
# Received objects wait here, linked, between the C-STORE answer and their index rows
# (dimse/indexing.py); keep it on the file system of DICOM_STORAGE_DIR so that is a link.
DICOM_SPOOL_DIR = Path(env.str("DICOM_SPOOL_DIR", default=str(DATA_DIR / "dicom-spool")))
# Listener worker processes sharing the port (parallel associations use several cores).
DICOM_LISTENER_PROCESSES = env.int("DICOM_LISTENER_PROCESSES",
                                   default=min(os.cpu_count() or 1, 4))

# --- Security (production) ------------------------------------------------------------------
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the upload page reads the token for its XHR requests
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="portal@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"pynetdicom": {"level": "WARNING"}},
}
