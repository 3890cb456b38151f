"""Celery application.

With a broker configured (``CELERY_BROKER_URL`` or ``REDIS_URL``) tasks go to real workers;
without one they run in-process (``task_always_eager``), so the embedded default needs no
services.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
