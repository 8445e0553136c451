"""A task that meets a database or broker error is retried with backoff, not acknowledged and
dropped; and every task of the project gets that policy without asking for it.

The retry is shown end to end: a real `celery worker` (tests.payments.test_real_broker) whose
database is reached through a small TCP relay in this test. The relay is down when the worker
takes an approved issue's charge, so the task's first query fails with PostgreSQL's connection
error (OperationalError); the relay then comes up and a retry charges the issue, once, at
localstripe.
"""

import importlib
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import InterfaceError, OperationalError

from billing.models import ChargeIssue
from config.celery import app
from core.tasks import BROKER_ERRORS
from tests.payments import test_real_broker
from tests.payments.test_real_broker import (  # noqa: F401 - shared fixtures
    approved_issue,
    broker,  # noqa: F811
    intents_of,
    start_worker,
    wait_until,
)


class Relay:
    """A TCP relay on a loopback port to PostgreSQL; connections are refused until start()."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._server = None
        self._sockets: list[socket.socket] = []

    def start(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for sock in self._sockets:
            sock.close()


@pytest.mark.django_db(transaction=True)
def test_a_charge_that_meets_a_database_outage_is_retried_and_charges_once(
    broker,  # noqa: F811
    start_worker,  # noqa: F811
    approved_issue,  # noqa: F811
    localstripe,
    monkeypatch,  # noqa: F811
):
    _, _, publish = broker
    issue = approved_issue()
    database = urlsplit(test_real_broker._database_url())
    relay = Relay((database.hostname, database.port or 5432))
    through_relay = urlunsplit(
        database._replace(netloc=database.netloc.replace(f":{database.port}", f":{relay.port}"))
    )
    monkeypatch.setattr(test_real_broker, "_database_url", lambda: through_relay)
    worker = start_worker("retrying")
    try:
        worker.wait_ready()
        task_id = publish(test_real_broker.CHARGE_TASK, issue.pk)
        wait_until(
            lambda: f"[{task_id}] retry: Retry in" in worker.output(),
            30,
            "the charge retried after the database refused it",
            diagnostics=worker.output,
        )
        assert "OperationalError" in worker.output()
        relay.start()  # the database is back
        wait_until(
            lambda: worker.results().get(task_id) == ["True"],
            60,
            "the retried charge ran and charged",
            diagnostics=worker.output,
        )
    finally:
        worker.kill()  # first, so its database sessions end with the relay's connections
        relay.stop()

    issue.refresh_from_db()
    assert issue.state == ChargeIssue.State.SUCCEEDED
    assert [pi["status"] for pi in intents_of(localstripe, issue)] == ["succeeded"]


def test_every_task_retries_database_and_broker_errors_with_backoff():
    """The policy is the app's task class (core.tasks.BackofficeTask): a task added later gets
    it too, and none of ours narrows it (an email task retrying only OSError, say)."""
    rooms = ("billing", "cards", "chargeflows", "payments", "recurring")
    for room in rooms:
        importlib.import_module(f"{room}.tasks")  # as a worker's autodiscovery does
    ours = {name: task for name, task in app.tasks.items() if name.split(".")[0] in rooms}
    assert len(ours) >= 25
    for name, task in ours.items():
        for error in (OperationalError, InterfaceError, *BROKER_ERRORS, OSError):
            assert issubclass(error, task.autoretry_for), (name, error)
        assert task.retry_backoff and task.max_retries >= 5, name
        assert task.retry_backoff_max < 600, name  # an ETA retry inside the visibility timeout
