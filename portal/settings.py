"""The one settings module, driven by environment variables.

With nothing set, the portal runs on the embedded default: SQLite and DICOM files under
``DATA_DIR``, Celery tasks in-process. Each service switches on when it is configured:
``DATABASE_URL`` (PostgreSQL), ``CELERY_BROKER_URL``/``REDIS_URL`` (real Celery workers),
``S3_BUCKET`` (S3-compatible object storage). Every variable is documented in README.md.
"""

import os
from pathlib import Path
from typing import Any

from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from portal.environment import Environment

BASE_DIR = Path(__file__).resolve().parent.parent

# Every variable goes through one typed reader that refuses what it cannot read.
env = Environment(os.environ)

PRODUCTION = env.bool("PRODUCTION", default=False)
DEBUG = env.bool("DEBUG", default=False)
# Development and tests only: production refuses to start with it (below).
DEVELOPMENT_SECRET_KEY = "insecure-development-key-set-SECRET_KEY-in-production"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY)
if PRODUCTION:
    if DEBUG:
        raise ImproperlyConfigured(
            "DEBUG is on with PRODUCTION=1: debug pages show settings and code to anyone; "
            "unset DEBUG in production")
    if (SECRET_KEY == DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 50
            or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith(("django-insecure", "insecure"))):
        raise ImproperlyConfigured(
            "SECRET_KEY must be set to a long random value (50 characters or more, not the "
            "built-in development key) with PRODUCTION=1")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

DATA_DIR = env.path("DATA_DIR", default=BASE_DIR / "data").resolve()

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
    "fhir_api",
    "dimse",
    "privacy",
    "sharing",
    "viewer",
    "patients",
    "reports",
    "replica",
    "orders",
    "ops",
    "csp",
]

MIDDLEWARE = [
    # Health probes and /metrics first: answered before host, HTTPS, session and 2FA checks.
    "ops.middleware.ProbeMiddleware",
    "ops.middleware.RequestLogMiddleware",
    "dicomweb.cors.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # OHIF's build files, public like the static files: before the session and sign-in.
    "viewer.files.OhifFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # Django's AuthenticationMiddleware and django-otp's OTPMiddleware in one query.
    "accounts.verified_device.VerifiedUserMiddleware",
    "accounts.middleware.RequireSecondFactorMiddleware",
    "patients.middleware.EndedCodeSessionMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
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
                "portal.navigation.links",
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
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=600, minimum=0)
    # A file, not memory, so servers and workers that tests start share the test database
    # (they are given its path); one per test run, so parallel runs never collide.
    DATABASES["default"]["TEST"] = {
        "NAME": str(DATA_DIR / f"test-portal-{os.getpid()}.sqlite3")
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60, minimum=0)
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
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5, minimum=1)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=1.0, minimum=0.0)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_USERNAME_CALLABLE = "accounts.backends.lockout_username"
AXES_RESET_ON_SUCCESS = True
# The same client address as every other limit and the audit (behind TRUSTED_PROXIES).
AXES_CLIENT_IP_CALLABLE = "portal.client_address.client_address"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# TOTP second factor for everyone but patients (accounts.middleware); off only in tests.
REQUIRE_2FA = env.bool("REQUIRE_2FA", default=True)
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Imaging portal")
# Admins never read anyone's TOTP key (django-otp's admin shows it otherwise).
OTP_ADMIN_HIDE_SENSITIVE_DATA = True
# A never-enrolled account enrols its phone only through a link an admin issues (or after
# setting its password through a reset link); the link works once, for this long.
ENROLMENT_LINK_HOURS = env.int("ENROLMENT_LINK_HOURS", default=72, minimum=1, maximum=24 * 30)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"  # each role's own home (portal.navigation)
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
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]

S3_BUCKET = env.str("S3_BUCKET")
DICOM_STORAGE: dict[str, Any]
if S3_BUCKET:
    DICOM_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": env.str("S3_ENDPOINT_URL") or None,
            "region_name": env.str("S3_REGION") or None,
            "access_key": env.str("S3_ACCESS_KEY_ID") or None,
            "secret_key": env.str("S3_SECRET_ACCESS_KEY") or None,
            "location": env.str("S3_PREFIX"),
            "file_overwrite": False,
            "default_acl": None,
            "querystring_auth": True,
        },
    }
else:
    DICOM_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": str(env.path("DICOM_STORAGE_DIR", default=DATA_DIR / "dicom")),
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
FILE_UPLOAD_MAX_MEMORY_SIZE = env.int("FILE_UPLOAD_MAX_MEMORY_SIZE", default=2 * 1024 * 1024,
                                      minimum=0)
DATA_UPLOAD_MAX_NUMBER_FILES = env.int("DATA_UPLOAD_MAX_NUMBER_FILES", default=1000, minimum=1)
FILE_UPLOAD_TEMP_DIR = env.str("FILE_UPLOAD_TEMP_DIR") or None
# Caps on what comes in (README, "Limits"): one object from any source, one STOW-RS request
# body, one upload-page request body, and how many times its own size a ZIP archive may
# unpack to (zip bombs).
INGEST_MAX_OBJECT_BYTES = env.int("INGEST_MAX_OBJECT_BYTES", default=2 * 1024**3, minimum=1)
STOW_MAX_REQUEST_BYTES = env.int("STOW_MAX_REQUEST_BYTES", default=20 * 1024**3, minimum=1)
UPLOAD_MAX_REQUEST_BYTES = env.int("UPLOAD_MAX_REQUEST_BYTES", default=4 * 1024**3, minimum=1)
ZIP_MAX_EXPANSION_RATIO = env.float("ZIP_MAX_EXPANSION_RATIO", default=200.0, minimum=1.0)

# The TrueType font report PDFs embed (reports.pdf): Debian's DejaVu Sans, which Chromium's
# fontconfig brings; without the file, PDF's core Helvetica (Latin-1: Portuguese and Spanish).
REPORT_PDF_FONT = env.path("REPORT_PDF_FONT",
                           default=Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"))

# --- Cache: shared by every web worker when Redis is configured (rate limits, ZIP layouts) ---
REDIS_URL = env.str("REDIS_URL")
CACHE_URL = env.str("CACHE_URL") or REDIS_URL
# Keys of one installation (or one test worker: bin/test runs the suite on several, against
# one Redis) apart from another's on a shared cache.
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX") or os.environ.get("PYTEST_XDIST_WORKER", "")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL,
                "KEY_PREFIX": CACHE_KEY_PREFIX}
    if CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
          "KEY_PREFIX": CACHE_KEY_PREFIX},
}
# Sessions are read from that cache and written through to the database (``cached_db``)
# when it is shared: a request then reads no session row. A per-process memory cache would
# keep a signed-out session alive in the other web workers, so without one they are read
# from the database on every request.
SESSION_ENGINE = ("django.contrib.sessions.backends.cached_db" if CACHE_URL
                  else "django.contrib.sessions.backends.db")

# --- Download links and shares: failed token or PIN attempts allowed per address -------------
SHARING_FAILURE_LIMIT = env.int("SHARING_FAILURE_LIMIT", default=10, minimum=1)
SHARING_FAILURE_WINDOW = env.int("SHARING_FAILURE_WINDOW", default=900, minimum=1)

# --- Patient access codes (printed on exam receipts) ------------------------------------------
PATIENT_CODE_LIFETIME_DAYS = env.int("PATIENT_CODE_LIFETIME_DAYS", default=30, minimum=1)
PATIENT_CODE_FAILURE_WINDOW = env.int("PATIENT_CODE_FAILURE_WINDOW", default=900, minimum=1)
PATIENT_CODE_ADDRESS_LIMIT = env.int("PATIENT_CODE_ADDRESS_LIMIT", default=10, minimum=1)
PATIENT_CODE_PREFIX_LIMIT = env.int("PATIENT_CODE_PREFIX_LIMIT", default=5, minimum=1)

# DICOMweb API tokens always expire: this many days unless the user picks fewer, at most
# API_TOKEN_MAX_DAYS.
API_TOKEN_MAX_DAYS = env.int("API_TOKEN_MAX_DAYS", default=365, minimum=1, maximum=3650)
API_TOKEN_DEFAULT_DAYS = env.int("API_TOKEN_DEFAULT_DAYS", default=90, minimum=1,
                                 maximum=API_TOKEN_MAX_DAYS)

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL") or REDIS_URL
# Tasks run in the web process only when no broker is configured. In production that is
# an explicit choice (TASKS_IN_PROCESS=1): a forgotten broker must not quietly turn
# background work into work done inside web requests.
TASKS_IN_PROCESS = env.bool("TASKS_IN_PROCESS", default=not CELERY_BROKER_URL and not PRODUCTION)
if TASKS_IN_PROCESS and env.str("CELERY_BROKER_URL"):
    raise ImproperlyConfigured("TASKS_IN_PROCESS=1 and CELERY_BROKER_URL are both set; "
                               "choose one")
if PRODUCTION and not CELERY_BROKER_URL and not TASKS_IN_PROCESS:
    raise ImproperlyConfigured(
        "No Celery broker is configured (CELERY_BROKER_URL or REDIS_URL) with PRODUCTION=1: "
        "set one for background workers, or set TASKS_IN_PROCESS=1 to run tasks in-process")
CELERY_TASK_ALWAYS_EAGER = TASKS_IN_PROCESS
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = CELERY_BROKER_URL or None
# A worker node can die mid-task (README, "Running at scale"); every task may run twice
# (each takes ids and checks what is done), so a task is acknowledged only when it has
# finished (acks_late): one whose worker died is given to another worker, not lost.
CELERY_TASK_ACKS_LATE = True
# ... and that holds when only the pool's child dies (the OOM killer, a segfault in a
# codec): without this Celery acknowledges the task as failed instead of requeueing it.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A worker takes one task at a time beyond those it runs: a dead node strands no queue.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# With Redis a task taken by a node that died (master and all) comes back to the queue
# once it has been unacknowledged this long (visibility timeout). So it must exceed the
# longest task and the longest countdown of a retry (backup_database waits 600 s), or a
# task still running or waiting is given to a second worker; a shorter one means a dead
# node's tasks resume sooner. A data export claimed this long ago is taken as abandoned.
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=3600, minimum=1)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    # Look for such tasks every 10 s (kombu's default scans only one call in ten).
    "unacked_restore_interval": min(10, CELERY_VISIBILITY_TIMEOUT),
    "unacked_restore_throttle": 1,
    # One worker sweeps at a time, under a lock in Redis; a worker killed during its sweep
    # holds it until it expires (kombu: 300 s), and no dead node's task comes back before.
    "unacked_mutex_expire": min(300, CELERY_VISIBILITY_TIMEOUT),
}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE = {
    "verify-fixity": {
        "task": "imaging.tasks.verify_fixity",
        "schedule": env.float("FIXITY_INTERVAL_SECONDS", default=24 * 3600.0, minimum=60.0),
    },
    "privacy-list-retention-due": {
        "task": "privacy.tasks.list_retention_due",
        "schedule": env.float("RETENTION_LIST_INTERVAL_SECONDS", default=24 * 3600.0,
                              minimum=60.0),
    },
    "privacy-delete-pending-blobs": {
        "task": "privacy.tasks.delete_pending_blobs", "schedule": 3600.0,
    },
    "privacy-delete-expired-exports": {
        "task": "privacy.tasks.delete_expired_exports", "schedule": 3600.0,
    },
}

# --- Replica: every stored object also goes, encrypted, to an S3-compatible store ---------
# Empty REPLICA_URL: no replica, and ingest works as it always did (no copy rows at all).
REPLICA_URL = env.str("REPLICA_URL")
REPLICA_BUCKET = env.str("REPLICA_BUCKET")
REPLICA_ACCESS_KEY_ID = env.str("REPLICA_ACCESS_KEY_ID")
REPLICA_SECRET_ACCESS_KEY = env.str("REPLICA_SECRET_ACCESS_KEY")
REPLICA_REGION = env.str("REPLICA_REGION")
REPLICA_PREFIX = env.str("REPLICA_PREFIX")
if REPLICA_URL and not REPLICA_BUCKET:
    raise ImproperlyConfigured("REPLICA_URL is set without REPLICA_BUCKET")
# A worker holds a copy this long while it uploads and reads it back; after that another
# worker (or the backlog drain) may take it over.
REPLICA_LEASE_SECONDS = env.int("REPLICA_LEASE_SECONDS", default=900, minimum=10)
# After a failed attempt the next waits this long, doubled per attempt up to the maximum.
REPLICA_RETRY_SECONDS = env.float("REPLICA_RETRY_SECONDS", default=30.0, minimum=0.0)
REPLICA_RETRY_MAX_SECONDS = env.float("REPLICA_RETRY_MAX_SECONDS", default=3600.0, minimum=0.0)
REPLICA_DRAIN_BATCH = env.int("REPLICA_DRAIN_BATCH", default=1000, minimum=1)
# The ingest's replication tasks are sent from a thread (replica.dispatcher), the copies of
# ingests this close together in one task of at most this many.
REPLICA_DISPATCH_LINGER_SECONDS = env.float("REPLICA_DISPATCH_LINGER_SECONDS", default=0.02,
                                            minimum=0.0)
REPLICA_DISPATCH_BATCH = env.int("REPLICA_DISPATCH_BATCH", default=16, minimum=1)
# Copies of one such task in flight at once (threads of the worker; each holds a database
# connection while it runs).
REPLICA_CONCURRENCY = env.int("REPLICA_CONCURRENCY", default=4, minimum=1)
# Pack objects before encryption (imaging.packing: byte-exact, self-verified); on by
# default: the replica is paid by the byte and read over the WAN, and a packed copy gives
# back exactly the original bytes. Off: new copies are the original bytes (old ones of
# either form keep reading).
REPLICA_PACKING = env.bool("REPLICA_PACKING", default=True)
CELERY_BEAT_SCHEDULE["replica-drain-backlog"] = {
    "task": "replica.tasks.drain_backlog",
    "schedule": env.float("REPLICA_DRAIN_INTERVAL_SECONDS", default=300.0, minimum=10.0),
}
# Eviction from the local tier (replica.evict): a local file goes only once the replica holds
# a verified copy with the same SHA-256, by each clinic's Clinic.evict_local_after_days and,
# on a local file system, oldest first while free space is below this percentage (0: off).
LOCAL_TIER_MIN_FREE_PERCENT = env.float("LOCAL_TIER_MIN_FREE_PERCENT", default=0.0,
                                        minimum=0.0, maximum=100.0)
CELERY_BEAT_SCHEDULE["replica-evict-local"] = {
    "task": "replica.tasks.evict_local",
    "schedule": env.float("EVICT_LOCAL_INTERVAL_SECONDS", default=3600.0, minimum=10.0),
}
# When a study arrives, this many of the patient's most relevant priors (imaging.priors) are
# recalled from the replica to the local tier in the background. 0: none.
RECALL_PRIORS_COUNT = env.int("RECALL_PRIORS_COUNT", default=3, minimum=0)
# Objects recalled at once by the priors' recall and `restore --from-replica` (threads).
RECALL_CONCURRENCY = env.int("RECALL_CONCURRENCY", default=4, minimum=1)

# Restore drills (replica.drill): every so often a random sample of studies is brought back
# from the replica and checked byte for byte; the admin index warns when none succeeded
# within the period.
RESTORE_DRILL_INTERVAL_SECONDS = env.float("RESTORE_DRILL_INTERVAL_SECONDS",
                                           default=7 * 24 * 3600.0, minimum=60.0)
RESTORE_DRILL_SAMPLE = env.int("RESTORE_DRILL_SAMPLE", default=5, minimum=1)
RESTORE_DRILL_MAX_BYTES = env.int("RESTORE_DRILL_MAX_BYTES", default=2 * 1024**3, minimum=1)
CELERY_BEAT_SCHEDULE["replica-restore-drill"] = {
    "task": "replica.tasks.restore_drill", "schedule": RESTORE_DRILL_INTERVAL_SECONDS,
}
# The database's own backup, encrypted, to the replica (replica.database_backup): the N most
# recent dumps are kept.
DATABASE_BACKUP_KEEP = env.int("DATABASE_BACKUP_KEEP", default=14, minimum=1)
CELERY_BEAT_SCHEDULE["replica-backup-database"] = {
    "task": "replica.tasks.backup_database",
    "schedule": env.float("DATABASE_BACKUP_INTERVAL_SECONDS", default=24 * 3600.0,
                          minimum=60.0),
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

# --- Replica encryption: the keys that wrap every replica object's data key ---------------
# "id1:<base64 of 32 bytes>,id2:<base64>"; replica.keys validates them (a system check when a
# replica is configured), so a bad key stops replication, not the portal. Never in the repo.
REPLICA_KEYS = env.str("REPLICA_KEYS")
# The id new replica objects (and rewraps) are encrypted under; older ids stay for reading.
REPLICA_CURRENT_KEY = env.str("REPLICA_CURRENT_KEY")

# --- Disaster recovery: manage.py reconcile and rebuild_index (README, "Disaster recovery") -
# Where reconcile --quarantine moves orphans, in the dicom storage and in the replica bucket
# (never deleted); listings of either tier skip it.
RECONCILE_QUARANTINE_PREFIX = env.str("RECONCILE_QUARANTINE_PREFIX", default="quarantine/")
if not RECONCILE_QUARANTINE_PREFIX.endswith("/") or RECONCILE_QUARANTINE_PREFIX == "/":
    raise ImproperlyConfigured("RECONCILE_QUARANTINE_PREFIX must be a folder name ending in /")
# An object younger than this is not called an orphan: its ingest may not have committed yet.
RECONCILE_MIN_AGE_SECONDS = env.int("RECONCILE_MIN_AGE_SECONDS", default=3600, minimum=0)

# --- Fixity: stored files are re-hashed periodically and compared with their SHA-256 -------
FIXITY_MAX_AGE_DAYS = env.float("FIXITY_MAX_AGE_DAYS", default=30.0, minimum=0.0)
FIXITY_BATCH_SIZE = env.int("FIXITY_BATCH_SIZE", default=5000, minimum=1)

# --- DICOMweb ---------------------------------------------------------------------------------
# Origins allowed to call /dicomweb/ from a browser (a viewer on another host); ["*"] allows
# any origin without credentials. Empty: same-origin only.
DICOMWEB_CORS_ORIGINS = env.list("DICOMWEB_CORS_ORIGINS", default=[])
# Only paths under this prefix get CORS headers (dicomweb.cors).
DICOMWEB_CORS_PATH = "/dicomweb/"
# Reverse proxies whose X-Forwarded-For is believed (addresses or CIDR networks): the client
# address every limit and the audit use (portal.client_address). Empty: REMOTE_ADDR only.
TRUSTED_PROXIES = env.networks("TRUSTED_PROXIES")
# Behind a reverse proxy: trust X-Forwarded-Host/-Proto so BulkDataURIs and links are right.
USE_X_FORWARDED_HOST = env.bool("USE_X_FORWARDED_HOST", default=False)
if env.bool("TRUST_X_FORWARDED_PROTO", default=PRODUCTION):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Frames for transfer-syntax=* (what OHIF asks): a lossless syntax native frames are
# transcoded to (JPEG-LS, 1.2.840.10008.1.2.4.80, by default), or "stored" to send them as
# stored. Encoded frames are kept on disk (dicomweb.frame_codecs), at most this many bytes.
WADO_FRAMES_ANY_SYNTAX = env.str("WADO_FRAMES_ANY_SYNTAX") or "1.2.840.10008.1.2.4.80"
if WADO_FRAMES_ANY_SYNTAX not in ("stored", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5",
                                  "1.2.840.10008.1.2.4.90"):
    raise ImproperlyConfigured("WADO_FRAMES_ANY_SYNTAX: stored, or a lossless UID "
                               "(1.2.840.10008.1.2.4.80, 1.2.840.10008.1.2.5, "
                               "1.2.840.10008.1.2.4.90)")
# Clients on these networks (the clinic's LAN) get frames asked with transfer-syntax=* as
# stored: on a LAN the transfer is cheaper than the browser's decode of a compressed frame.
# Everyone else gets WADO_FRAMES_ANY_SYNTAX. Addresses or CIDR networks; "none": nobody.
WADO_FRAMES_LAN_NETWORKS = ([] if env.str("WADO_FRAMES_LAN_NETWORKS") == "none" else
                            env.networks("WADO_FRAMES_LAN_NETWORKS", default=[
                                "127.0.0.0/8", "::1", "10.0.0.0/8", "172.16.0.0/12",
                                "192.168.0.0/16", "169.254.0.0/16", "fc00::/7", "fe80::/10"]))
WADO_FRAME_CACHE_DIR = env.path("WADO_FRAME_CACHE_DIR", default=DATA_DIR / "frame-cache")
WADO_FRAME_CACHE_BYTES = env.int("WADO_FRAME_CACHE_BYTES", default=2 * 1024**3, minimum=0)

# OHIF's prebuilt viewer (bin/fetch-ohif) served at /viewer/ when present; cross-origin
# isolation (COOP/COEP on the viewer) lets OHIF use SharedArrayBuffer for MPR.
OHIF_DIST = env.path("OHIF_DIST", default=BASE_DIR / ".cache" / "ohif" / "dist")
OHIF_CROSS_ORIGIN_ISOLATED = env.bool("OHIF_CROSS_ORIGIN_ISOLATED", default=False)

# --- DICOM ----------------------------------------------------------------------------------
DICOM_AE_TITLE = env.str("DICOM_AE_TITLE", default="PORTAL")
DICOM_PORT = env.int("DICOM_PORT", default=11112, minimum=1, maximum=65535)
# The address the listener binds to: loopback unless told; 0.0.0.0 (all interfaces) in
# production, where modalities connect from the network (peers are checked anyway).
DICOM_BIND = env.str("DICOM_BIND", default="127.0.0.1")
# Seconds a peer may stay silent, or not read, before it is disconnected.
DICOM_NETWORK_TIMEOUT = env.float("DICOM_NETWORK_TIMEOUT", default=60.0, minimum=0.1)
# Refused associations: one audit entry per calling address and window of this many
# seconds; the ones refused in between are counted into the next entry (dimse/handlers.py).
DICOM_REFUSAL_AUDIT_WINDOW = env.int("DICOM_REFUSAL_AUDIT_WINDOW", default=60, minimum=1)
# Accept associations from peers not configured in admin (first installation only).
DICOM_ALLOW_UNKNOWN_PEERS = env.bool("DICOM_ALLOW_UNKNOWN_PEERS", default=False)
# Seconds a listener process keeps its copy of the peer table (dimse/peers.py): a peer
# changed in admin is in force for every new association at most this long after; 0 reads
# the table on every association.
DICOM_PEER_CACHE_SECONDS = env.float("DICOM_PEER_CACHE_SECONDS", default=5.0, minimum=0.0)
# Received objects wait here, linked, between the C-STORE answer and their index rows
# (dimse/indexing.py); keep it on the file system of DICOM_STORAGE_DIR so that is a link.
DICOM_SPOOL_DIR = env.path("DICOM_SPOOL_DIR", default=DATA_DIR / "dicom-spool")
# Listener worker processes sharing the port (parallel associations use several cores).
DICOM_LISTENER_PROCESSES = env.int("DICOM_LISTENER_PROCESSES",
                                   default=min(os.cpu_count() or 1, 4), minimum=1)
# The listener's speed-ups of pynetdicom's internals (dimse/pynetdicom_patches.py): 0 runs
# it on pynetdicom as it is. Only pynetdicom 3.0.4 is patched; another refuses to start.
DICOM_PYNETDICOM_PATCHES = env.bool("DICOM_PYNETDICOM_PATCHES", default=True)
# On PostgreSQL, each listener process takes its associations' connections from a pool
# (dimse.server.prepare_database) rather than opening one per association; a thread whose
# pool has none ready at once opens its own (dimse.pooled_postgresql), so a pool still
# reconnecting after a database restart never refuses what a new connection would serve.
DICOM_DATABASE_POOL = env.bool("DICOM_DATABASE_POOL", default=True)

# --- HL7 v2 (orders in over MLLP, orders/) ---------------------------------------------------
HL7_PORT = env.int("HL7_PORT", default=2575, minimum=1, maximum=65535)
HL7_BIND = env.str("HL7_BIND", default="127.0.0.1")
# Accept messages from senders not configured as HL7 peers (first installation only).
HL7_ALLOW_UNKNOWN_PEERS = env.bool("HL7_ALLOW_UNKNOWN_PEERS", default=False)
# A framed message larger than this is refused and the connection closed.
HL7_MAX_MESSAGE_BYTES = env.int("HL7_MAX_MESSAGE_BYTES", default=1024 * 1024, minimum=1024)
# Seconds a sender may stay silent inside a connection before it is closed.
HL7_NETWORK_TIMEOUT = env.float("HL7_NETWORK_TIMEOUT", default=60.0, minimum=0.1)

# --- HL7 v2 results out (ORU^R01 to the EHR over MLLP, orders/results.py) --------------------
# Where a final report (and each amendment) is sent; empty host: no results are queued.
HL7_RESULTS_HOST = env.str("HL7_RESULTS_HOST")
HL7_RESULTS_PORT = env.int("HL7_RESULTS_PORT", default=2575, minimum=1, maximum=65535)
# Seconds to connect, and to wait for the acknowledgement once the message is written.
HL7_RESULTS_CONNECT_TIMEOUT = env.float("HL7_RESULTS_CONNECT_TIMEOUT", default=10.0,
                                        minimum=0.1)
HL7_RESULTS_ACK_TIMEOUT = env.float("HL7_RESULTS_ACK_TIMEOUT", default=30.0, minimum=0.1)
# Attempts before a message is marked failed (shown in admin, where it can be resent); the
# wait after a failed attempt, doubled per attempt up to the maximum.
HL7_RESULTS_MAX_ATTEMPTS = env.int("HL7_RESULTS_MAX_ATTEMPTS", default=10, minimum=1)
HL7_RESULTS_RETRY_SECONDS = env.float("HL7_RESULTS_RETRY_SECONDS", default=30.0, minimum=0.0)
HL7_RESULTS_RETRY_MAX_SECONDS = env.float("HL7_RESULTS_RETRY_MAX_SECONDS", default=3600.0,
                                          minimum=0.0)
# MSH-3/4 (the portal) and MSH-5/6 (the EHR) of the messages sent.
HL7_RESULTS_SENDING_APPLICATION = env.str("HL7_RESULTS_SENDING_APPLICATION", default="PORTAL")
HL7_RESULTS_SENDING_FACILITY = env.str("HL7_RESULTS_SENDING_FACILITY")
HL7_RESULTS_RECEIVING_APPLICATION = env.str("HL7_RESULTS_RECEIVING_APPLICATION")
HL7_RESULTS_RECEIVING_FACILITY = env.str("HL7_RESULTS_RECEIVING_FACILITY")
CELERY_BEAT_SCHEDULE["orders-sweep-results"] = {
    "task": "orders.tasks.sweep_results",
    "schedule": env.float("HL7_RESULTS_SWEEP_INTERVAL_SECONDS", default=60.0, minimum=5.0),
}
# The portal's absolute address (https://portal.example.org), for links sent outside it
# (the study's page in an ORU). Empty: messages carry no link.
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL").rstrip("/")
if PORTAL_BASE_URL and not PORTAL_BASE_URL.startswith(("https://", "http://")):
    raise ImproperlyConfigured(
        f"PORTAL_BASE_URL must be an absolute http(s) URL, not {PORTAL_BASE_URL!r}")

# --- Security (production) ------------------------------------------------------------------
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600, minimum=60)
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
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# Content-Security-Policy (django-csp) for the portal's own pages: scripts only from our
# static files, nothing framed, no plugins. Inline style attributes remain in templates;
# styles cannot run code. OHIF under /viewer/ gets its own, looser policy (viewer.views).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:", "blob:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="portal@localhost")

# --- Operations (ops/): health probes, Prometheus metrics, structured logs -------------------
# /metrics answers a bearer token (Authorization: Bearer <METRICS_TOKEN>) and/or clients in
# these networks; with neither set it is off (404).
METRICS_TOKEN = env.str("METRICS_TOKEN")
METRICS_ALLOWED_NETS = env.networks("METRICS_ALLOWED_NETS")
# The DICOM listener's HTTP port for /health/live, /health/ready and /metrics (0: off).
DICOM_HEALTH_PORT = env.int("DICOM_HEALTH_PORT", default=0, minimum=0, maximum=65535)
# A Celery worker's HTTP port for the same three (0: off), on this address.
CELERY_HEALTH_PORT = env.int("CELERY_HEALTH_PORT", default=0, minimum=0, maximum=65535)
CELERY_HEALTH_BIND = env.str("CELERY_HEALTH_BIND", default="127.0.0.1")
# "json": one JSON object a line (requests, associations, tasks, with the request id).
LOG_FORMAT = env.choice("LOG_FORMAT", default="text", choices=["text", "json"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "ops.logs.RequestIdFilter"}},
    "formatters": {"json": {"()": "ops.logs.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["request_id"],
                             **({"formatter": "json"} if LOG_FORMAT == "json" else {})}},
    "root": {"handlers": ["console"], "level": env.choice(
        "LOG_LEVEL", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])},
    "loggers": {"pynetdicom": {"level": "WARNING"}},
}
