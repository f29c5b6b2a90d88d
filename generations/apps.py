from django.apps import AppConfig
from django.db.models.signals import post_save


class GenerationsConfig(AppConfig):
    name = "generations"
    verbose_name = "Generations"

    def ready(self) -> None:
        from .models import GenerationResult
        from .signals import result_saved

        # Only saves: listening to deletes would make Django load every doomed row;
        # the delete services announce their own changes.
        post_save.connect(result_saved, sender=GenerationResult, dispatch_uid="results-saved")
