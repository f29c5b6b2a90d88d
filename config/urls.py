"""Top-level routes: the gallery, the JSON API, auth views, admin, share links and /healthz."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from generations.api import views as api

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="gallery:index", permanent=False)),
    path("healthz", api.healthz, name="healthz"),
    path("api/", include("generations.api.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("s/", include("gallery.shared_urls")),
    path("", include("gallery.urls")),
]

admin.site.site_header = "genvault admin"
admin.site.site_title = "genvault"
