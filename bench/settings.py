"""Settings for benchmark child processes: the embedded default, with bench-only knobs.

Everything is `config.settings.local` (what `make run` uses); on top, the Celery queue
is one of the harness's own (so no stray task of another run is consumed), DEBUG is
off (DEBUG keeps every query in memory), and one extra static folder lets whitenoise
serve the copy of an image that the serving benchmark compares against.
"""

from config.settings.local import *  # noqa: F403
from config.settings.local import STATICFILES_DIRS, env

DEBUG = False
WHITENOISE_AUTOREFRESH = False
CELERY_TASK_DEFAULT_QUEUE = env.str("GENVAULT_BENCH_QUEUE", default="genvault-bench")
DERIVATIVES_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}-derivatives"
_bench_static = env.str("GENVAULT_BENCH_STATIC_DIR", default="")
if _bench_static:
    STATICFILES_DIRS = [*STATICFILES_DIRS, ("bench", _bench_static)]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
