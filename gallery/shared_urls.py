"""Routes a share link opens, for anyone holding it."""

from django.urls import path

from . import shared

app_name = "shared"

urlpatterns = [
    path("<str:token>/", shared.page, name="page"),
    path("<str:token>/images/<int:result_id>", shared.image, name="image"),
]
