"""The embedded default: one machine, nothing else installed."""

from .base import *  # noqa: F403
from .base import VAR_DIR, env

DEBUG = env.bool("DEBUG", default=True)

VAR_DIR.mkdir(parents=True, exist_ok=True)
(VAR_DIR / "celery" / "queue").mkdir(parents=True, exist_ok=True)
(VAR_DIR / "celery" / "control").mkdir(parents=True, exist_ok=True)

# gunicorn serves static files through whitenoise straight from the source folders.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
