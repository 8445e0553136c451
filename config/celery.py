import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("backoffice")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _use_django_logging(**kwargs):
    """Workers and beat log through settings.LOGGING, whose handlers mask card numbers. With a
    receiver here Celery installs none of its own handlers (it would replace the root's)."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)
