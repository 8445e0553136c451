import os

from celery import Celery
from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

# core.tasks.BackofficeTask: every task retries database and broker errors with backoff.
app = Celery("backoffice", task_cls="core.tasks:BackofficeTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _use_django_logging(**kwargs):
    """Workers and beat log through settings.LOGGING, whose handlers mask card numbers. With a
    receiver here Celery installs none of its own handlers (it would replace the root's)."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


# Every line a task logs carries its id (core.logging's context; JSON lines in production), and
# the id of the request that started it, if one did: published with the message as a header.
_log_tokens = {}
REQUEST_ID_HEADER = "request_id"


@before_task_publish.connect
def _request_id_to_message(headers=None, **kwargs):
    """A task published while a request is served (or by a task a request started) carries the
    request's id in its message headers. Here, not in each task: every task gets it."""
    from core.logging import log_context

    request_id = log_context().get("request_id")
    if request_id and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, request_id)


@task_prerun.connect
def _log_context_for_task(task_id=None, task=None, **kwargs):
    from core.logging import log_context, log_context_start

    # Celery puts the message's headers on task.request. A task run eagerly (tests, the local
    # run) has no message: it runs inside the request that called it, whose context says.
    request_id = getattr(task.request, REQUEST_ID_HEADER, None) if task else None
    request_id = request_id or log_context().get("request_id")
    _log_tokens[task_id] = log_context_start(
        task_id=task_id, task=task.name if task else None, request_id=request_id
    )


@task_postrun.connect
def _log_context_after_task(task_id=None, **kwargs):
    from core.logging import log_context_end

    token = _log_tokens.pop(task_id, None)
    if token is not None:
        try:
            log_context_end(token)
        except ValueError:  # set in another context (a thread pool): nothing to restore there
            pass
