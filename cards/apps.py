from django.apps import AppConfig


class CardsConfig(AppConfig):
    name = "cards"
    verbose_name = "Cards"

    def ready(self):
        from . import receivers  # noqa: F401 - provider events about cards (payments' webhooks)
