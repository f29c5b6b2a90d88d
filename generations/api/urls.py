from django.urls import path, re_path

from . import views as api
from .app import api as router

app_name = "api"

urlpatterns = [
    path("generate", api.generate, name="generate"),
    path("results/<int:result_id>/favorite", api.result_favorite, name="result_favorite"),
    path("results/<int:result_id>/tags", api.result_tags, name="result_tags"),
    # A path, not a str: a tag name may hold a slash.
    path("results/<int:result_id>/tags/<path:tag_name>", api.result_tag, name="result_tag"),
    path("usage", api.usage, name="usage"),
    path("downloads", api.downloads, name="downloads"),
    path("shares", api.shares, name="shares"),
    path("shares/<int:share_id>", api.share_detail, name="share"),
    path("images/<int:result_id>", api.image, name="image"),
    path("images/<int:result_id>/thumbnail", api.thumbnail, name="thumbnail"),
    path("export", api.export, name="export"),
    # The operations described by /api/openapi.json (and the document and its page), in
    # this namespace: `api:generation` is one of them.
    *router.urls[0],
    # Last: what no route above takes answers the API's 404, not the site's page.
    re_path(r"", api.not_found, name="not_found"),
]
