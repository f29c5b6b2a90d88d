from django.urls import path

from . import views as api

app_name = "api"

urlpatterns = [
    path("generate", api.generate, name="generate"),
    path("generations/<int:generation_id>", api.generation_detail, name="generation"),
    path("images/<int:result_id>", api.image, name="image"),
    path("images/<int:result_id>/thumbnail", api.thumbnail, name="thumbnail"),
    path("export", api.export, name="export"),
]
