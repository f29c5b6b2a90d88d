"""The embedded default: one machine, nothing else installed."""

from .base import *  # noqa: F403
from .base import (
    ARK_API_KEY,
    DEMO_UPSTREAM_APP,
    DEMO_UPSTREAM_URL,
    IMAGE_FETCH_ALLOWED_HOSTS,
    INSTALLED_APPS,
    VAR_DIR,
    env,
    with_demo_host,
)

DEBUG = env.bool("DEBUG", default=True)

# No Ark key: images come from the bundled demo upstream, served on loopback.
INSTALLED_APPS = [*INSTALLED_APPS, DEMO_UPSTREAM_APP]
if not ARK_API_KEY:
    IMAGE_FETCH_ALLOWED_HOSTS = with_demo_host(IMAGE_FETCH_ALLOWED_HOSTS, DEMO_UPSTREAM_URL)

VAR_DIR.mkdir(parents=True, exist_ok=True)
(VAR_DIR / "celery" / "queue").mkdir(parents=True, exist_ok=True)
(VAR_DIR / "celery" / "control").mkdir(parents=True, exist_ok=True)

# gunicorn serves static files through whitenoise straight from the source folders.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
