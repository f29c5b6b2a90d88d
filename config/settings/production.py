"""Production: no silent fallbacks. Every secret and every service is named by the
operator; a missing one stops start-up with one line naming the variable."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import ARK_API_KEY, DEMO_UPSTREAM_APP, INSTALLED_APPS, env


def _required(name: str, why: str) -> str:
    value = env.str(name, default="")
    if not value:
        raise ImproperlyConfigured(f"{name} is required in production: {why}")
    return value


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = _required("SECRET_KEY", "it signs sessions, CSRF tokens and share links")
# The embedded SQLite file and filesystem broker serve one machine only.
_required("DATABASE_URL", "for example postgres://user:password@host:5432/genvault")
if not env.str("CELERY_BROKER_URL", default="") and not env.str("REDIS_URL", default=""):
    raise ImproperlyConfigured(
        "CELERY_BROKER_URL is required in production (or REDIS_URL): "
        "for example redis://host:6379/0 or amqp://user:password@host:5672//"
    )
GENVAULT_DEMO = env.bool("GENVAULT_DEMO", default=False)
if not ARK_API_KEY and not GENVAULT_DEMO:
    raise ImproperlyConfigured(
        "ARK_API_KEY is required in production (or GENVAULT_DEMO=1 to generate "
        "with the demo upstream at DEMO_UPSTREAM_URL)"
    )
if GENVAULT_DEMO:
    # Asked for by name. Its host is not added to IMAGE_FETCH_ALLOWED_HOSTS: an operator
    # serving it over plain http or on a private address allows it there themselves.
    INSTALLED_APPS = [*INSTALLED_APPS, DEMO_UPSTREAM_APP]

# TLS ends at the reverse proxy, which must set X-Forwarded-Proto (overwriting what a
# client sent): without it every request looks like plain http and the redirect loops.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# A load balancer's health probe speaks plain http to the backend and follows no redirect.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
# A year, once the site is known to work over https; 0 turns HSTS off.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
# Off by default: they bind every subdomain too, which only the domain's owner can promise.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
