"""Worker: handler-style consumption with middleware and key-ordered concurrency."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import signal
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ._message import Message
from ._subscription import DeliveryMode, Subscription
from .errors import ConfigError

if TYPE_CHECKING:
    from ._bus import Bus

log = logging.getLogger("polybus.worker")

Handler = Callable[[Message], Awaitable[None]]
"""An async function that processes one message; returning means success."""
Middleware = Callable[[Handler], Handler]
"""Wraps a handler. The first middleware in a list is the outermost."""

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class _Route:
    topic: str
    group: str
    func: Callable[[Message], Any]
    max_in_flight: int
    delivery: DeliveryMode


def chain(handler: Handler, middleware: Sequence[Middleware]) -> Handler:
    """Wrap ``handler`` so that ``middleware[0]`` runs first (outermost)."""
    for mw in reversed(middleware):
        handler = mw(handler)
    return handler


class Worker:
    """Runs handlers for subscriptions, through middleware, until stopped.

    A handler returns to ack; when it raises, the middleware decides (retry, dead
    letter); with no middleware deciding, the message is nacked for redelivery. Up to
    ``max_in_flight`` messages of a subscription run at once, but messages with the
    same key run one at a time in delivery order (key-ordered concurrency). Sync
    handlers run in a thread pool. ``run()`` handles SIGTERM and SIGINT (main thread):
    stop fetching, finish and settle in-flight messages, close.
    """

    def __init__(
        self,
        bus: Bus,
        middleware: Sequence[Middleware] = (),
        *,
        shutdown_timeout: float = 30.0,
        handle_signals: bool = True,
    ) -> None:
        self.bus = bus
        self.middleware = list(middleware)
        self.shutdown_timeout = shutdown_timeout
        self.handle_signals = handle_signals
        self._routes: list[_Route] = []
        self._stopping = asyncio.Event()
        self._ready = asyncio.Event()
        self._finished = asyncio.Event()
        self._subscribed = 0
        self._running = False

    def handler(
        self,
        topic: str,
        *,
        group: str,
        max_in_flight: int = 64,
        delivery: DeliveryMode = "at_least_once",
    ) -> Callable[[F], F]:
        """Register the decorated function (async or sync) for ``group`` on ``topic``."""
        if delivery == "effectively_once" and not any(
            getattr(mw, "provides_idempotency", False) for mw in self.middleware
        ):
            raise ConfigError(
                "delivery",
                "effectively_once needs idempotency middleware "
                "(polybus.defaults(idempotency=store))",
            )

        def register(func: F) -> F:
            self._routes.append(_Route(topic, group, func, max_in_flight, delivery))
            return func

        return register

    async def stop(self) -> None:
        """Ask ``run()`` to stop: no more fetching; in-flight messages finish and settle."""
        self._stopping.set()

    @property
    def ready(self) -> bool:
        """True once every handler's subscription is open (its group exists)."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        """Wait until every handler's subscription is open, so that messages published
        from then on reach every group. Returns early if ``run()`` ends first."""
        ready = asyncio.ensure_future(self._ready.wait())
        finished = asyncio.ensure_future(self._finished.wait())
        try:
            await asyncio.wait({ready, finished}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            finished.cancel()

    async def run(self) -> None:
        """Consume until :meth:`stop` or a signal; return once everything is settled."""
        if not self._routes:
            raise ConfigError("handler", "the worker has no handlers")
        self._running = True
        self._finished.clear()
        self._subscribed = 0
        loop = asyncio.get_running_loop()
        signals = self._install_signals(loop)
        max_deliveries = next(
            (mw.max_deliveries for mw in self.middleware if hasattr(mw, "max_deliveries")), None
        )
        try:
            async with asyncio.TaskGroup() as tg:
                for route in self._routes:
                    sub = self.bus.subscribe(
                        route.topic,
                        group=route.group,
                        max_in_flight=route.max_in_flight,
                        delivery=route.delivery,
                        max_deliveries=max_deliveries,
                    )
                    tg.create_task(self._serve(route, sub))
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            self._running = False
            self._ready.clear()
            self._finished.set()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return []
        installed: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):
                continue
            installed.append(sig)
        return installed

    def _on_signal(self, sig: int) -> None:
        log.info("received %s, stopping gracefully", signal.Signals(sig).name)
        self._stopping.set()

    async def _serve(self, route: _Route, sub: Subscription) -> None:
        pool = None
        base: Handler
        if inspect.iscoroutinefunction(route.func):
            base = route.func
        else:
            pool = ThreadPoolExecutor(route.max_in_flight, thread_name_prefix="polybus-handler")
            base = _in_thread(route.func, pool)
        handler = chain(base, self.middleware)
        try:
            await self._serve_with(handler, sub)
        finally:
            if pool is not None:
                pool.shutdown(wait=False)

    async def _serve_with(self, handler: Handler, sub: Subscription) -> None:
        tasks: set[asyncio.Task[None]] = set()
        lanes: dict[str, deque[Message]] = {}

        async def run_one(msg: Message) -> None:
            try:
                await handler(msg)
            except Exception as exc:
                if not msg.settled:
                    log.warning(
                        "handler failed, nacking topic=%s group=%s id=%s error=%s",
                        msg.topic,
                        msg.group,
                        msg.id,
                        type(exc).__name__,
                    )
                    await _settle_quietly(msg.nack())
                return
            if not msg.settled:
                await _settle_quietly(msg.ack())

        async def run_lane(key: str, first: Message) -> None:
            lane = lanes[key]
            msg: Message | None = first
            try:
                while msg is not None:
                    await run_one(msg)
                    msg = lane.popleft() if lane else None
            finally:
                del lanes[key]

        def spawn(coro: Awaitable[None]) -> None:
            task = asyncio.ensure_future(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def dispatch(msg: Message) -> None:
            if msg.key is None:
                spawn(run_one(msg))
            elif msg.key in lanes:
                lanes[msg.key].append(msg)
            else:
                lanes[msg.key] = deque()
                spawn(run_lane(msg.key, msg))

        async with sub:
            self._subscribed += 1
            if self._subscribed == len(self._routes):
                self._ready.set()
            fetcher = asyncio.ensure_future(self._fetch(sub, dispatch))

            stopper = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({fetcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
            fetcher.cancel()
            stopper.cancel()
            fetch_error = None
            try:
                await fetcher
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # the broker failed: finish what we have, then raise
                fetch_error = exc
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=self.shutdown_timeout)
                for task in pending:  # their messages go back to the broker on close
                    task.cancel()
                if pending:
                    log.error(
                        "%d handlers still running after %.1fs, cancelled; their messages "
                        "will be redelivered",
                        len(pending),
                        self.shutdown_timeout,
                    )
                    await asyncio.wait(pending)
            if fetch_error is not None:
                raise fetch_error

    async def _fetch(self, sub: Subscription, dispatch: Callable[[Message], None]) -> None:
        async for msg in sub:
            dispatch(msg)


async def _settle_quietly(settling: Awaitable[None]) -> None:
    try:
        await settling
    except Exception:
        log.exception("settling a message failed; the broker will redeliver it")


def _in_thread(func: Callable[[Message], Any], pool: ThreadPoolExecutor) -> Handler:
    @functools.wraps(func)
    async def call_in_thread(msg: Message) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(pool, func, msg)

    return call_in_thread
