"""One pika ``AsyncioConnection`` on the event loop, reopened with backoff when lost.

pika's asyncio adapter runs every callback on the loop that owns the connection, so
nothing here blocks it and no lock is needed: all state is touched from that loop only.
:class:`Chan` turns pika's callback style into awaitables; a channel the broker closes
(a refused declaration, a missing exchange) fails every pending call with the reason.

The connection is the only thing reconnected here (publisher and new consumers share
it); a consumer whose channel dies with it is not resumed: it reports
:class:`~polybus.errors.BrokerUnavailable` and the core opens a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel

from polybus.errors import BrokerUnavailable, PolybusError
from polybus.spi import Backoff

from . import _errors

log = logging.getLogger("polybus.rabbitmq")

Closed = Callable[[BaseException], None]


class Chan:
    """A pika channel whose RPCs are awaitable. ``reason`` is set once it is gone."""

    def __init__(self, channel: Channel, link: Link) -> None:
        self.native = channel
        self.link = link
        self.reason: BaseException | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._listeners: list[Closed] = []
        channel.add_on_close_callback(self._on_close)

    @property
    def is_open(self) -> bool:
        return self.reason is None and bool(self.native.is_open)

    def on_close(self, listener: Closed) -> None:
        """Call ``listener(reason)`` once, when the channel closes for any reason."""
        if self.reason is not None:
            listener(self.reason)
        else:
            self._listeners.append(listener)

    async def call(self, start: Callable[[Callable[[Any], None]], None]) -> Any:
        """Run ``start(callback)`` and wait for pika to call back (or the channel to die)."""
        if self.reason is not None:
            raise self.reason
        fut: asyncio.Future[Any] = self.link.loop.create_future()

        def done(frame: Any) -> None:
            if not fut.done():
                fut.set_result(frame)

        self._pending.add(fut)
        try:
            start(done)
            return await fut
        finally:
            self._pending.discard(fut)

    async def close(self) -> None:
        """Close the channel (returning its unacked deliveries to their queues)."""
        if self.reason is not None or not self.native.is_open:
            return
        waiter: asyncio.Future[None] = self.link.loop.create_future()

        def closed(_reason: BaseException) -> None:
            if not waiter.done():
                waiter.set_result(None)

        self.on_close(closed)
        with contextlib.suppress(Exception):
            self.native.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, self.link.connect_timeout)

    def _on_close(self, _channel: Channel, reason: BaseException) -> None:
        self.reason = reason
        for fut in self._pending:
            if not fut.done():
                fut.set_exception(reason)
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener(reason)


class Link:
    """The adapter's connection, reconnected in the background with ``backoff``
    (jittered) after it is lost, until :meth:`close`."""

    def __init__(
        self, params: list[Any], *, connect_timeout: float, backoff: Backoff, where: str
    ) -> None:
        self.params = params
        self.connect_timeout = connect_timeout
        self.backoff = backoff
        self.where = where
        self._rng = random.Random()
        self._conn: AsyncioConnection | None = None
        self._up = asyncio.Event()
        self._closing = False
        self._reconnect: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_error: BaseException | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise BrokerUnavailable(f"RabbitMQ at {self.where}: the adapter is not open")
        return self._loop

    async def open(self) -> None:
        """Connect once: :class:`BrokerUnavailable` after ``connect_timeout`` per host,
        :class:`~polybus.errors.ConfigError` (``credentials``) if the login is refused."""
        self._loop = asyncio.get_running_loop()
        self._up = asyncio.Event()
        self._closing = False
        await self._connect(refusal_is_final=True)

    async def _connect(self, *, refusal_is_final: bool) -> None:
        errors: list[BaseException] = []
        for params in self.params:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    self._conn = await self._connect_one(params)
            except Exception as exc:  # every host failed is the error
                errors.append(exc)
                continue
            self._up.set()
            return
        refused = next((e for e in errors if _errors.is_login_refused(e)), None)
        if refused is not None and refusal_is_final:
            raise _errors.login_refused(refused, self.where)
        last = refused or (errors[-1] if errors else None)
        self.last_error = last
        if isinstance(last, TimeoutError):
            err = BrokerUnavailable(
                f"RabbitMQ at {self.where} unavailable: no connection within "
                f"{self.connect_timeout:g}s"
            )
            err.__cause__ = last
            raise err
        raise _errors.connection_error(last, self.where)

    async def _connect_one(self, params: Any) -> AsyncioConnection:
        opened: asyncio.Future[AsyncioConnection] = self.loop.create_future()

        def on_open(conn: Any) -> None:
            if not opened.done():
                opened.set_result(conn)

        def on_error(_conn: Any, exc: BaseException) -> None:
            if not opened.done():
                opened.set_exception(exc)

        conn = AsyncioConnection(
            params,
            on_open_callback=on_open,
            on_open_error_callback=on_error,
            on_close_callback=self._on_close,
            custom_ioloop=self.loop,
        )
        try:
            return await opened
        except BaseException:
            with contextlib.suppress(Exception):
                if not conn.is_closed and not conn.is_closing:
                    conn.close()
            raise

    def _on_close(self, conn: Any, reason: BaseException) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self._up.clear()
        self.last_error = reason
        if self._closing:
            return
        log.warning(
            "connection to %s lost (%s); reconnecting", self.where, _errors.describe(reason)
        )
        self._reconnect = self.loop.create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                # a refused login while reconnecting is ridden out like an outage
                # (credentials being rotated); channel() reports it as BrokerUnavailable
                await self._connect(refusal_is_final=False)
            except PolybusError as exc:
                attempt += 1
                delay = self.backoff.delay(attempt, self._rng)
                log.warning("reconnect to %s failed (%s); retry in %.2fs", self.where, exc, delay)
                await asyncio.sleep(delay)
                continue
            log.info("reconnected to %s", self.where)
            return

    async def channel(self) -> Chan:
        """A new open channel, waiting up to ``connect_timeout`` for a reconnection;
        :class:`BrokerUnavailable` if none comes."""
        if self._closing:
            raise BrokerUnavailable(f"RabbitMQ at {self.where}: the adapter is closed")
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._up.wait()
        except TimeoutError:
            raise _errors.connection_error(self.last_error, self.where) from None
        conn = self._conn
        assert conn is not None
        opened: asyncio.Future[Channel] = self.loop.create_future()

        def on_open(ch: Channel) -> None:
            if not opened.done():
                opened.set_result(ch)

        try:
            conn.channel(on_open_callback=on_open)
            async with asyncio.timeout(self.connect_timeout):
                channel = await opened
        except Exception as exc:
            raise _errors.connection_error(exc, self.where) from exc
        return Chan(channel, self)

    async def close(self) -> None:
        """Close the connection and stop reconnecting. Idempotent."""
        self._closing = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(BaseException):
                await self._reconnect
        conn, self._conn = self._conn, None
        self._up.clear()
        if conn is None or conn.is_closed:
            return
        done: asyncio.Future[None] = self.loop.create_future()

        def closed(*_args: Any) -> None:
            if not done.done():
                done.set_result(None)

        conn.add_on_close_callback(closed)
        with contextlib.suppress(Exception):
            conn.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, self.connect_timeout)
