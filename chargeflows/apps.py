from django.apps import AppConfig


class ChargeflowsConfig(AppConfig):
    name = "chargeflows"
    verbose_name = "Charge flows"

    def ready(self):
        from . import receivers  # noqa: F401 - owner registration, space and billing signals
