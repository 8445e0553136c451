"""The project's Celery app pointed at another broker inside a test, with tasks not run inline.

The suite runs tasks eagerly (config.settings.test); these helpers make `.delay()` publish for
real, to a Redis database of the test's own (tests.payments.test_real_broker's `broker`
fixture) or to a closed port (the broker down), and read back what the queue holds.
"""

import json
import socket
from collections import Counter
from contextlib import contextmanager

from config.celery import app


def closed_port_url() -> str:
    """A Redis URL on a loopback port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def _reset_pools() -> None:
    # Only forgotten, not closed: kombu keeps producer pools per connection URL, and a closed
    # one would be handed out again when the URL comes back.
    app._pool = None
    app.amqp._producer_pool = None


@contextmanager
def app_broker(url: str):
    """Inside: tasks are published to `url` (never run inline); restored afterwards.

    Celery reads CELERY_BROKER_URL from the environment before its settings, so the write URL
    (what publishing uses) is the one set here."""
    saved = app.conf.task_always_eager, app.conf.broker_write_url
    app.conf.task_always_eager = False
    app.conf.broker_write_url = url
    _reset_pools()
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.broker_write_url = saved
        _reset_pools()


def queued(redis_client, queue: str = "celery") -> Counter:
    """(task name, its arguments as Celery shows them) -> how many messages the queue holds."""
    found = Counter()
    for raw in redis_client.lrange(queue, 0, -1):
        headers = json.loads(raw)["headers"]
        found[(headers["task"], headers["argsrepr"])] += 1
    return found
