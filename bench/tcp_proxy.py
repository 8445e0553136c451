"""TCP proxies that bench/chaos.py can cut: a network fault on one service, on demand.

Each proxy listens on a free loopback port and forwards every connection to one target (the
database, the broker, the provider). `cut(name, seconds)` is an outage of that service as its
clients see it: every open connection is reset (both sides, as a dropped link or a restarted
server would), the listening socket is closed so new connections are refused, and after
`seconds` the proxy listens again on the same port and forwards as before.

Written here rather than taken from PyPI: toxiproxy (the maintained tool for this) is a Go
server the project does not install, and its Python clients only drive it; the small proxies on
PyPI are unmaintained and cannot cut. This is asyncio's streams and nothing else: one event
loop in a daemon thread of the bench process, so the bench's own work (sampling the database,
the clock) never waits for it.
"""

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"
CHUNK = 64 * 1024


@dataclass
class Cut:
    name: str
    seconds: float
    started: float  # time.time()
    ended: float | None = None
    connections_reset: int = 0


@dataclass
class _Proxy:
    name: str
    target: tuple[str, int]
    port: int = 0
    server: asyncio.Server | None = None
    open: bool = False
    links: set = field(default_factory=set)
    accepted: int = 0


class Proxies:
    """The proxies of one bench run and the thread their event loop runs in."""

    def __init__(self):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._thread.start()
        self._proxies: dict[str, _Proxy] = {}
        self.cuts: list[Cut] = []

    def _run(self, coroutine, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    # --- API for the bench (any thread) ---------------------------------------------------

    def add(self, name: str, target_host: str, target_port: int) -> int:
        """Start a proxy to target; returns the loopback port it listens on."""
        proxy = _Proxy(name=name, target=(target_host, target_port))
        self._proxies[name] = proxy
        self._run(self._listen(proxy))
        return proxy.port

    def cut(self, name: str, seconds: float) -> Cut:
        """Start an outage of `seconds` and return at once; the Cut's `ended` is set when the
        proxy listens again."""
        cut = Cut(name=name, seconds=seconds, started=time.time())
        self.cuts.append(cut)
        asyncio.run_coroutine_threadsafe(self._cut(self._proxies[name], cut), self._loop)
        return cut

    def accepted(self, name: str) -> int:
        return self._proxies[name].accepted

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # --- In the loop -----------------------------------------------------------------------

    async def _listen(self, proxy: _Proxy) -> None:
        # reuse_address: the port is bound again right after the cut closed it.
        proxy.server = await asyncio.start_server(
            lambda r, w: self._accept(proxy, r, w), HOST, proxy.port, reuse_address=True
        )
        proxy.port = proxy.server.sockets[0].getsockname()[1]
        proxy.open = True

    async def _accept(self, proxy: _Proxy, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*proxy.target)
        except OSError:
            writer.transport.abort()  # the service itself is down: the client sees a reset
            return
        if not proxy.open:  # cut while we were connecting upstream
            writer.transport.abort()
            up_writer.transport.abort()
            return
        proxy.accepted += 1
        link = (writer, up_writer)
        proxy.links.add(link)
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            proxy.links.discard(link)

    async def _cut(self, proxy: _Proxy, cut: Cut) -> None:
        proxy.open = False
        proxy.server.close()  # nothing listens: new connections are refused
        for client, upstream in list(proxy.links):
            # abort: an RST, no goodbye, on both sides (the server's backend and the client
            # both see the link die, as when a network path or a server goes away).
            client.transport.abort()
            upstream.transport.abort()
            cut.connections_reset += 1
        proxy.links.clear()
        await asyncio.sleep(cut.seconds)
        await self._listen(proxy)
        cut.ended = time.time()

    async def _close_all(self) -> None:
        for proxy in self._proxies.values():
            proxy.open = False
            if proxy.server is not None:
                proxy.server.close()
            for client, upstream in list(proxy.links):
                client.transport.abort()
                upstream.transport.abort()
            proxy.links.clear()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction until it ends; then close the other side's writer, which ends the
    opposite direction too (these protocols never half-close)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
