"""Routes of the staff gallery and the generate form."""

from django.urls import path

from . import views

app_name = "gallery"

urlpatterns = [
    path("gallery/", views.index, name="index"),
    path("gallery/<int:result_id>/", views.detail, name="detail"),
    path("gallery/<int:result_id>/viewer/", views.viewer, name="viewer"),
    path("gallery/<int:result_id>/delete/", views.delete, name="delete"),
    path("gallery/<int:result_id>/restore/", views.restore, name="restore"),
    path("gallery/<int:result_id>/favorite/", views.favorite, name="favorite"),
    path("gallery/<int:result_id>/tags/", views.add_tags, name="add_tags"),
    path("gallery/<int:result_id>/tags/remove/", views.remove_tag, name="remove_tag"),
    path("gallery/bulk/", views.bulk, name="bulk"),
    path("gallery/download/", views.download, name="download"),
    path("gallery/shares/", views.shares, name="shares"),
    path("gallery/shares/new/", views.share_new, name="share_new"),
    path("gallery/shares/<int:share_id>/revoke/", views.share_revoke_view, name="share_revoke"),
    path("gallery/restore-all/", views.restore_all, name="restore_all"),
    path("gallery/clear/", views.clear_all, name="clear_all"),
    path("generate/", views.generate, name="generate"),
    path("generate/<int:generation_id>/cards/", views.generation_cards, name="generation_cards"),
    path("gallery/usage/", views.usage, name="usage"),
]
