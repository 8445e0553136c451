"""Run localstripe (a Stripe-protocol server from PyPI) on a loopback address.

Differences from `localstripe --port N`:
- binds to --host (127.0.0.1 by default) instead of every interface;
- --port 0 picks a free port; the chosen address is printed as the first line on stdout;
- its state lives in --state (the project's var/ folder) instead of /tmp/localstripe.pickle,
  written atomically once per write request; an empty --state keeps it in memory only (tests).
"""

import argparse
import logging
import os
import pickle
import socket
import sys
from pathlib import Path

from aiohttp import web
from localstripe import resources
from localstripe.server import app

DEFAULT_STATE = Path(__file__).resolve().parent.parent / "var" / "localstripe.pickle"


def _persist_to(state: Path | None) -> None:
    store_class = resources.Store

    def try_load_from_disk(self):
        if state is None or not state.is_file():
            return
        with state.open("rb") as f:
            old = pickle.load(f)
        self.clear()
        self.update(old)

    def dump_to_disk(self):
        if state is None:
            return
        tmp = state.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(dict(self), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, state)

    store_class.try_load_from_disk = try_load_from_disk
    store_class.dump_to_disk = dump_to_disk
    # localstripe also dumps on every single item write; once per request (its middleware) is
    # enough and keeps the server fast as the store grows.
    store_class.__setitem__ = dict.__setitem__
    store_class.__delitem__ = dict.__delitem__


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420, help="0 picks a free port")
    parser.add_argument("--state", default=str(DEFAULT_STATE), help="'' keeps state in memory")
    parser.add_argument("--from-scratch", action="store_true", help="ignore saved state")
    args = parser.parse_args(argv)

    state = Path(args.state) if args.state else None
    if state is not None:
        state.parent.mkdir(parents=True, exist_ok=True)
    _persist_to(state)
    if not args.from_scratch:
        resources.store.try_load_from_disk()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    print(f"localstripe listening on http://{host}:{port}", flush=True)

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)


if __name__ == "__main__":
    main()
