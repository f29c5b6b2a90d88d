from typing import Any

from django.apps import AppConfig


class GalleryConfig(AppConfig):
    name = "gallery"
    verbose_name = "Gallery"

    def ready(self) -> None:
        from generations.signals import results_changed

        from .selectors import forget_header_counts

        def recount(sender: Any, **kwargs: Any) -> None:
            forget_header_counts()

        results_changed.connect(recount, weak=False, dispatch_uid="gallery-header-counts")
