"""JSON log lines (production) and the request id: core.logging, core.request_id."""

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from celery import Celery, shared_task
from celery.worker.request import Request
from django.http import HttpResponse

from billing import api_services
from billing.models import ChargeIssue
from core.logging import JsonLinesFormatter, log_context_end, log_context_start
from core.request_id import RequestIdMiddleware
from spaces.roles import ADMIN
from tests.factories import CustomerFactory, PaymentCardFactory, SpaceFactory, StaffUserFactory

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def json_lines():
    """What the configured console handler writes, as parsed JSON lines, with the production
    formatter in place of the plain one."""
    (console,) = [h for h in logging.getLogger().handlers if h.name == "console"]
    stream = io.StringIO()
    previous_stream, previous_formatter = console.setStream(stream), console.formatter
    console.setFormatter(JsonLinesFormatter())

    def lines():
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield lines
    console.setStream(previous_stream)
    console.setFormatter(previous_formatter)


def test_a_json_line_with_a_card_number_comes_out_masked(json_lines):
    token = log_context_start(request_id="req-12345678", space=7, issue=42)
    try:
        logging.getLogger("billing.api").warning(
            "customer wrote %s",
            "4242 4242 4242 4242",
            extra={"note": "4242424242424242", "data": {"args": ["4242 4242 4242 4242"]}},
        )
        try:
            raise ValueError("bad value 4242-4242-4242-4242")
        except ValueError:
            logging.getLogger("django.request").exception("failed")
    finally:
        log_context_end(token)

    warning, error = json_lines()
    assert warning["level"] == "WARNING" and warning["logger"] == "billing.api"
    assert warning["message"].startswith("customer wrote ") and "4242" not in warning["message"]
    assert "4242" not in warning["note"] and "4242" not in json.dumps(warning["data"])
    assert (warning["request_id"], warning["space"], warning["issue"]) == ("req-12345678", 7, 42)
    assert warning["time"].endswith("+00:00")
    assert "ValueError: bad value" in error["exc_info"] and "4242-4242" not in error["exc_info"]


@pytest.mark.django_db
def test_an_api_request_logs_its_request_id_space_and_issue(client, json_lines):
    space = SpaceFactory()
    admin = StaffUserFactory(username="keyadmin", role=ADMIN, spaces=[space])
    _, full_key = api_services.api_key_create(space=space, name="ERP", acting_user=admin)
    PaymentCardFactory(customer=CustomerFactory(space=space, external_number="C-1"))

    response = client.post(
        "/api/v1/charge-issues",
        data=json.dumps({"customer": "C-1", "amount": "12.00"}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {full_key}"},
    )

    assert response.status_code == 201, response.content
    issue = ChargeIssue.objects.get()
    (started,) = [line for line in json_lines() if "started through api key" in line["message"]]
    assert started["request_id"] == response["X-Request-ID"]
    assert (started["space"], started["issue"]) == (space.pk, issue.pk)


@shared_task(name="tests.log_something")
def _log_something():
    logging.getLogger("tests.task").info("inside the task")


def test_a_celery_task_logs_its_task_id(json_lines):
    result = _log_something.apply()

    (line,) = [line for line in json_lines() if line["message"] == "inside the task"]
    assert line["task_id"] == result.id and line["task"] == "tests.log_something"


@pytest.mark.django_db
def test_every_answer_carries_a_request_id_and_a_proxys_id_is_kept(client):
    fresh = client.get("/healthz/live")
    kept = client.get("/healthz/live", headers={"X-Request-ID": "proxy-abc-123456"})
    refused = client.get("/register/x/?n=4242424242424242")
    # Ids that are no ids (too short, odd characters, a card number) are replaced.
    replaced = [
        client.get("/healthz/live", headers={"X-Request-ID": bad})["X-Request-ID"]
        for bad in ("x", "a b c d e f g h", "4242424242424242")
    ]

    assert len(fresh["X-Request-ID"]) == 32
    assert kept["X-Request-ID"] == "proxy-abc-123456"
    assert refused.status_code == 400 and len(refused["X-Request-ID"]) == 32
    assert all(len(value) == 32 and value.isalnum() for value in replaced)


def _settings_value(module: str, expression: str, **env) -> str:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": module,
        "SECRET_KEY": "x" * 50,
        **env,
    }
    code = f"import django; django.setup(); from django.conf import settings; print({expression})"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    return done.stdout.strip() or done.stderr


def test_production_logs_json_lines_and_development_plain_ones():
    formatter = 'settings.LOGGING["handlers"]["console"]["formatter"]'

    assert _settings_value("config.settings.production", formatter) == "json"
    assert _settings_value("config.settings.production", formatter, LOG_FORMAT="plain") == "plain"
    assert _settings_value("config.settings.local", formatter) == "plain"
    assert "LOG_FORMAT must be json or plain" in _settings_value(
        "config.settings.production", formatter, LOG_FORMAT="xml"
    )


@pytest.mark.django_db
def test_djangos_own_error_lines_carry_the_request_id(client, json_lines):
    # Django logs these after the middleware chain has returned (django.request's log_response).
    missing = client.get("/no/such/page/")
    refused = client.post("/webhooks/stripe", {"a": "b"})

    lines = {line["message"]: line for line in json_lines() if line["logger"] == "django.request"}
    assert lines["Not Found: /no/such/page/"]["request_id"] == missing["X-Request-ID"]
    assert lines["Bad Request: /webhooks/stripe"]["request_id"] == refused["X-Request-ID"]
    assert lines["Bad Request: /webhooks/stripe"]["level"] == "WARNING"


def test_a_task_published_while_a_request_is_served_logs_the_request_id(json_lines):
    """The worker's side of it: the message carries the request's id (config.celery's
    before_task_publish receiver) and the task's lines name it beside the task id (its
    task_prerun receiver). Published through a real kombu transport (in memory) and run as a
    worker runs a message (celery.worker.request.Request), after the request's context has
    ended; the project's tasks run eagerly in the rest of the suite, with no message at all."""
    import config.celery  # noqa: F401  (connects the receivers)

    app = Celery("request-id-test", set_as_current=False)

    @app.task(name="tests.log_in_worker")
    def log_in_worker(n):
        logging.getLogger("tests.task").info("worker ran %s", n)

    # An explicit URL: Celery would otherwise take CELERY_BROKER_URL from the environment.
    with app.connection_for_write("memory://") as connection:
        queue = connection.SimpleQueue("celery")
        token = log_context_start(request_id="req-from-the-view-1")
        try:
            during_request = log_in_worker.apply_async((1,), connection=connection)
        finally:
            log_context_end(token)
        outside = log_in_worker.apply_async((2,), connection=connection)
        for _ in range(2):
            Request(queue.get(timeout=5), app=app).execute()
        queue.close()

    lines = {line["message"]: line for line in json_lines() if line["logger"] == "tests.task"}
    first, second = lines["worker ran 1"], lines["worker ran 2"]
    assert (first["task_id"], first["task"]) == (during_request.id, "tests.log_in_worker")
    assert first["request_id"] == "req-from-the-view-1"
    assert second["task_id"] == outside.id and "request_id" not in second


def test_a_task_run_eagerly_inside_a_request_logs_both_ids(rf, json_lines):
    """Eagerly, as tests and the one-command local run do: no message, the request's context."""

    def view(request):
        _log_something.delay()
        return HttpResponse("ok")

    response = RequestIdMiddleware(view)(rf.get("/"))

    (line,) = [line for line in json_lines() if line["message"] == "inside the task"]
    assert line["request_id"] == response["X-Request-ID"]
    assert line["task_id"] and line["task"] == "tests.log_something"
