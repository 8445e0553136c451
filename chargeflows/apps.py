from django.apps import AppConfig


class ChargeflowsConfig(AppConfig):
    name = "chargeflows"
    verbose_name = "Charge flows"
