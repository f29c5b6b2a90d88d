from django.apps import AppConfig


class DemoUpstreamConfig(AppConfig):
    name = "generations.upstream.demo"
    label = "demo_upstream"
    verbose_name = "Demo upstream"
