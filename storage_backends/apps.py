from django.apps import AppConfig


class StorageBackendsConfig(AppConfig):
    name = "storage_backends"
    verbose_name = "Storage backends"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
