import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()
# Load the URL map (and with it every view, pydicom and the codecs) now, so that the first
# request a worker serves does not pay half a second of imports.
get_resolver().url_patterns  # noqa: B018
# And what its first STOW would load (with a replica: the tasks and Celery's producers).
from imaging import ingest  # noqa: E402 - once the settings are set up

ingest.prepare()
