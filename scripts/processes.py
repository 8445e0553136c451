"""Process handling shared by `make run` (scripts/run.py) and `make run-prod-like`
(scripts/run_prod_like.py): free ports, starting children in their own process groups,
waiting for them to listen, stopping them all on Ctrl-C or when one dies."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MANAGE = [PY, str(ROOT / "manage.py")]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def require_free_ports(ports: list[tuple[int, str, str]], command: str) -> None:
    """`ports`: (port, what listens there, the variable that chooses it)."""
    for port, what, variable in ports:
        if not port_is_free(port):
            raise SystemExit(
                f"Port {port} for the {what} is taken (another `{command}`?). "
                f"Stop it or choose another with {variable}=NNNN {command}."
            )


def wait_for_port(port: int, proc: subprocess.Popen, name: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with code {proc.returncode}; see its output above.")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"{name} did not listen on 127.0.0.1:{port} within {seconds:.0f}s.")


class Processes:
    """The children of one run. `start` them, then `supervise()`; Ctrl-C (SIGINT) or SIGTERM
    stops them all, as does any one of them exiting."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen]] = []
        signal.signal(signal.SIGINT, self.stop_all)
        signal.signal(signal.SIGTERM, self.stop_all)

    def run(self, args: list[str]) -> None:
        """A one-off command (migrate, seed) that must succeed."""
        subprocess.run(args, env=self.env, cwd=ROOT, check=True)

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        # Each child leads its own process group so Ctrl-C here can stop it and its children.
        proc = subprocess.Popen(args, env=self.env, cwd=ROOT, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def stop_all(self, *_) -> None:
        # SIGTERM to each leader lets it stop its own children (Celery's pool, gunicorn's
        # workers) cleanly; what is left of a group afterwards, or a leader stuck past 10 s, is
        # killed.
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for name, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop within 10s; killing it.")
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        print("\nAll processes stopped.", flush=True)
        sys.exit(0)

    def supervise(self) -> None:
        while True:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; stopping the rest.")
                    self.stop_all()
            time.sleep(1)

    def start_localstripe(self, port: int, state: Path) -> None:
        proc = self.start(
            "localstripe",
            [
                PY,
                str(ROOT / "scripts" / "localstripe_server.py"),
                "--port",
                str(port),
                "--state",
                str(state),
            ],
        )
        wait_for_port(port, proc, "localstripe")

    def start_celery(self, schedule: Path, *, quiet: bool = False) -> None:
        """One worker and the one beat. `quiet`: without Celery's start-up banner, as the
        Procfile starts them in production (JSON log lines only)."""
        celery = [PY, "-m", "celery", "-A", "config", *(["--quiet"] if quiet else [])]
        self.start("worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2"])
        self.start("beat", [*celery, "beat", "--loglevel", "INFO", "--schedule", str(schedule)])

    def seed_demo(self, web_port: int) -> None:
        # Demo data registers a demo card with localstripe, so it runs once that is up.
        self.run([*MANAGE, "seed_demo"])
        # The provider's events (payment_intent.*, payment_method.*) reach /webhooks/stripe.
        self.run([*MANAGE, "localstripe_webhooks", f"http://127.0.0.1:{web_port}/webhooks/stripe"])
