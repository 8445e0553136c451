"""Settings for the benchmarks: the local settings, a bench URLconf and quiet logs.

Used only by scripts in bench/ (DJANGO_SETTINGS_MODULE=bench.settings); never by the app.
"""

import copy
from pathlib import Path

from config.settings.local import *  # noqa: F403
from config.settings.local import LOGGING, TEMPLATES

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "bench.urls"

TEMPLATES = copy.deepcopy(TEMPLATES)
TEMPLATES[0]["DIRS"] = [*TEMPLATES[0]["DIRS"], Path(__file__).resolve().parent / "templates"]

# One log line per request would cost the server more than some of the views measured.
LOGGING = copy.deepcopy(LOGGING)
LOGGING["root"]["level"] = "WARNING"
LOGGING.setdefault("loggers", {})["django.server"] = {"level": "WARNING"}
