"""`make run` as a newcomer uses it: scripts/run.py on SQLite with the embedded broker.

It must serve the admin login and /healthz, let a printed demo user log in, run a Celery task
through the embedded broker, and stop every process it started on Ctrl-C.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from celery import Celery

ROOT = Path(__file__).resolve().parent.parent
# Variables the test settings put into this process's environment; `make run` must not see them.
TEST_ONLY = {
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CACHE_URL",
    "EMAIL_URL",
    "DJANGO_SETTINGS_MODULE",
    "STRIPE_API_BASE",
    "STRIPE_JS_URL",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Output:
    def __init__(self, stream):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, proc: subprocess.Popen, seconds: float) -> re.Match:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            assert proc.poll() is None, f"run.py exited early:\n{self.text}"
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not seen within {seconds}s:\n{self.text}")


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    return {int(p) for p, sid in (line.split() for line in out.splitlines()) if int(sid) == pid}


def test_make_run_serves_the_back_office_and_stops_cleanly(tmp_path, monkeypatch):
    web_port, stripe_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in TEST_ONLY}
    env.update(VAR_DIR=str(tmp_path), PORT=str(web_port), LOCALSTRIPE_PORT=str(stripe_port))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "run.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = _Output(proc.stdout)
    started: set[int] = set()
    try:
        out.wait_for(r"Back office:\s+http://127\.0\.0\.1:\d+/admin/", proc, 120)
        out.wait_for(r"celery@\S+ ready", proc, 60)
        started = {p for child in _children_of(proc.pid) for p in _children(child) | {child}}
        base = f"http://127.0.0.1:{web_port}"

        health = requests.get(f"{base}/healthz", timeout=15)
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok"

        password = out.wait_for(r"clerk\s+password: (\S+)", proc, 1).group(1)
        session = requests.Session()
        login_page = session.get(f"{base}/admin/login/", timeout=10)
        assert login_page.status_code == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
        index = session.post(
            f"{base}/admin/login/?next=/admin/",
            data={"username": "clerk", "password": password, "csrfmiddlewaretoken": token},
            headers={"Referer": f"{base}/admin/login/"},
            timeout=10,
        )
        assert (
            index.status_code == 200
            and "Demo Space" in session.get(f"{base}/admin/spaces/space/", timeout=10).text
        )

        queue = tmp_path / "celery" / "queue"
        # Celery prefers this variable over the broker given to the app.
        monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
        producer = Celery(
            broker="filesystem://",
            broker_transport_options={
                "data_folder_in": str(queue),
                "data_folder_out": str(queue),
                "control_folder": str(tmp_path / "celery" / "control"),
            },
        )
        result = producer.send_task("celery.backend_cleanup")
        out.wait_for(rf"Task celery\.backend_cleanup\[{result.id}\] succeeded", proc, 30)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()

    assert "All processes stopped." in out.text
    time.sleep(0.5)
    alive = {pid: _cmdline(pid) for pid in started if _running(pid)}
    assert started and not alive, f"left running: {alive}"


def _running(pid: int) -> bool:
    # An exited child nobody has reaped yet (a zombie, state Z) is not running.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except FileNotFoundError:
        return "?"


def _children_of(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    return {int(p) for p, ppid in (line.split() for line in out.splitlines()) if int(ppid) == pid}
