"""A loopback TCP proxy that makes network faults on demand (the operations tier).

Clients connect to the proxy's port instead of the broker's; the proxy forwards every
byte both ways until told otherwise:

* :meth:`FaultProxy.cut`: reset every connection (RST, as a crashed router or a
  firewall reload does) and refuse new ones until :meth:`FaultProxy.restore`;
* :meth:`FaultProxy.stall`: hold every byte in both directions while keeping the
  connections (a partition: nothing arrives, nothing fails) until restore.

It runs its own event loop in a daemon thread, so it keeps working whatever the test's
loop is doing, and its methods may be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FaultProxy"]

_CHUNK = 65536


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int, port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._wanted_port = port
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._flowing: asyncio.Event | None = None
        self._cut = False
        self.accepted = 0
        self.resets = 0

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> FaultProxy:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="polybus-fault-proxy", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        if not self.port:
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not loop.is_running():
            return
        self._call(self._shutdown)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults (any thread) ---------------------------------------------------------

    def cut(self) -> None:
        """Reset every connection now and refuse new ones until :meth:`restore`."""
        self._call(self._do_cut)

    def stall(self) -> None:
        """Hold every byte in both directions, keeping the connections, until restore."""
        self._call(self._do_stall)

    def restore(self) -> None:
        """Forward again (and accept new connections)."""
        self._call(self._do_restore)

    @property
    def connections(self) -> int:
        """Connections open through the proxy now."""
        return len(self._links)

    # -- the proxy's own loop ----------------------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the fault proxy is not running")
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        loop.call_soon_threadsafe(run)
        done.wait(10)

    async def _serve(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._wanted_port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            self._reset(link)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            _abort(writer)
            self.resets += 1
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort(writer)  # the broker itself is down: the client sees a reset
            return
        self.accepted += 1
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.ensure_future(self._pump(reader, up_writer, link)),
            asyncio.ensure_future(self._pump(up_reader, writer, link)),
        ]

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link
    ) -> None:
        flowing = self._flowing
        assert flowing is not None
        try:
            while True:
                await flowing.wait()
                data = await source.read(_CHUNK)
                if not data:
                    break
                await flowing.wait()  # bytes read as a stall began are held too
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if link in self._links:
                self._links.discard(link)
                for w in (link.client, link.upstream):
                    with contextlib.suppress(Exception):
                        w.close()
                for task in link.tasks:
                    if task is not asyncio.current_task():
                        task.cancel()

    def _reset(self, link: _Link) -> None:
        self._links.discard(link)
        for task in link.tasks:
            task.cancel()
        _abort(link.client)
        _abort(link.upstream)
        self.resets += 1

    def _do_cut(self) -> None:
        self._cut = True
        assert self._flowing is not None
        self._flowing.set()
        for link in list(self._links):
            self._reset(link)

    def _do_stall(self) -> None:
        assert self._flowing is not None
        self._flowing.clear()

    def _do_restore(self) -> None:
        self._cut = False
        assert self._flowing is not None
        self._flowing.set()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a graceful FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
