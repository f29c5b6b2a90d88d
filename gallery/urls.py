from django.urls import path

from . import views

app_name = "gallery"

urlpatterns = [
    path("gallery/", views.index, name="index"),
    path("gallery/<int:result_id>/", views.detail, name="detail"),
    path("generate/", views.generate, name="generate"),
]
