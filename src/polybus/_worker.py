"""Worker: handler-style consumption with middleware, supervised until stopped."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import signal
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ._handlers import Signature, bind, signature_of
from ._message import Message, now
from ._pipeline.supervision import Health
from ._subscription import DeliveryMode, Subscription
from .capabilities import Ordering
from .errors import PERMANENT, ConfigError, Reject

if TYPE_CHECKING:
    from ._bus import Bus
    from .telemetry import Telemetry

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
    func: Callable[..., Any]
    signature: Signature
    max_in_flight: int
    delivery: DeliveryMode
    ordering: Ordering
    subscription: Subscription | None = field(default=None)

    @property
    def name(self) -> str:
        return f"{self.topic}/{self.group}"


def chain(handler: Handler, middleware: Sequence[Middleware]) -> Handler:
    """Wrap ``handler`` so that ``middleware[0]`` runs first (outermost)."""
    for mw in reversed(middleware):
        handler = mw(handler)
    return handler


class Worker:
    """Runs handlers for subscriptions, through middleware, until stopped.

    A handler returns to ack; when it raises, the middleware decides (retry, dead
    letter); with no middleware deciding, the message is nacked for redelivery. Up to
    ``max_in_flight`` messages of a route run at once; in a key-ordered route
    (``ordering="key"``) the subscription hands out a key's next message only after
    the earlier one is settled, so a key's messages run one at a time, in order. Sync
    handlers run in a thread pool.

    ``run()`` rides out broker outages of any length: each route's subscription
    reconnects with jittered backoff (:meth:`health` tells its state) and in-flight
    handlers finish. Only :meth:`stop`, SIGTERM/SIGINT (main thread) or a
    non-transient error (a ConfigError, refused credentials) ends it: stop fetching,
    finish and settle in-flight messages, close.
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
        self._observers: list[Callable[[str, Message, str], None]] = []
        """Told ``(route, message, settlement)`` for every settlement (polybus.testing)."""
        self._startup: list[Callable[[], Any]] = []
        self._shutdown: list[Callable[[], Any]] = []

    def on_startup(self, func: F) -> F:
        """Register ``func`` (async or sync, no arguments) to run in :meth:`run` before
        the first subscription opens (open a database pool here). An error in it ends
        ``run()`` before anything is consumed."""
        self._startup.append(func)
        return func

    def on_shutdown(self, func: F) -> F:
        """Register ``func`` (async or sync, no arguments) to run when :meth:`run` ends,
        after the last message settled (close the pool here); hooks run in reverse
        order of registration, each even if an earlier one failed, and not at all if a
        startup hook failed."""
        self._shutdown.append(func)
        return func

    def handler(
        self,
        topic: str,
        *,
        group: str,
        max_in_flight: int = 64,
        delivery: DeliveryMode = "at_least_once",
        ordering: Ordering | str = Ordering.NONE,
    ) -> Callable[[F], F]:
        """Register the decorated function (async or sync) for ``group`` on ``topic``.

        The function takes the message (``msg: Message``), the decoded body
        (``order: Order``: a pydantic model, a dataclass, ``bytes``, ``str``, ``dict``)
        or both (``order: Order, msg: Message``); a body that does not decode is
        dead-lettered at once. Every option is checked here (ConfigError naming it),
        including an ordering the backend refuses and a second handler for the same
        topic and group.
        """
        chosen = Ordering.parse(ordering)
        # a throw-away subscription checks names, options and the ordering (no I/O)
        self.bus.subscribe(
            topic, group=group, max_in_flight=max_in_flight, delivery=delivery, ordering=chosen
        )
        if any(r.topic == topic and r.group == group for r in self._routes):
            raise ConfigError(
                "group", f"a handler for group {group!r} of topic {topic!r} is already registered"
            )
        if delivery == "effectively_once" and not any(
            getattr(mw, "provides_idempotency", False) for mw in self.middleware
        ):
            raise ConfigError(
                "delivery",
                "effectively_once needs idempotency middleware "
                "(polybus.defaults(idempotency=store))",
            )

        def register(func: F) -> F:
            if not callable(func):
                raise ConfigError("handler", f"{func!r} is not callable")
            sig = signature_of(func)  # an unusable signature fails here, not in run()
            route = _Route(topic, group, func, sig, max_in_flight, delivery, chosen)
            self._routes.append(route)
            return func

        return register

    async def stop(self) -> None:
        """Ask ``run()`` to stop: no more fetching; in-flight messages finish and settle."""
        self._stopping.set()

    @property
    def ready(self) -> bool:
        """True once every handler's subscription is open (its group exists)."""
        return self._ready.is_set()

    def health(self) -> dict[str, Health]:
        """Each route's state, keyed ``"topic/group"``: ``running``, ``reconnecting``
        (since when, the last error), ``starting`` or ``closed``. A liveness probe
        checks that ``run()`` is alive; a readiness probe that every route is running
        (:attr:`Health.healthy`)."""
        out = {}
        for route in self._routes:
            sub = route.subscription
            out[route.name] = sub.health if sub is not None else Health("starting", now())
        return out

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
        started = False
        try:
            for hook in self._startup:
                await _call(hook)
            started = True
            await self._consume()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            self._running = False
            self._ready.clear()
            try:
                if started:  # a failed startup opened nothing to close
                    await self._run_shutdown_hooks()
            finally:
                self._finished.set()

    async def _run_shutdown_hooks(self) -> None:
        errors: list[BaseException] = []
        for hook in reversed(self._shutdown):
            try:
                await _call(hook)
            except Exception as exc:
                log.exception("shutdown hook %r failed", hook)
                errors.append(exc)
        if errors:
            raise errors[0]

    async def _consume(self) -> None:
        max_deliveries = next(
            (mw.max_deliveries for mw in self.middleware if hasattr(mw, "max_deliveries")), None
        )
        try:
            async with asyncio.TaskGroup() as tg:
                for route in self._routes:
                    route.subscription = self.bus.subscribe(
                        route.topic,
                        group=route.group,
                        max_in_flight=route.max_in_flight,
                        delivery=route.delivery,
                        max_deliveries=max_deliveries,
                        ordering=route.ordering,
                        reconnect_timeout=math.inf,  # a worker rides out any outage
                    )
                    self._watch(route, route.subscription)
                    tg.create_task(self._serve(route, route.subscription))
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:  # one route failed: raise its error itself
                raise group.exceptions[0] from None
            raise

    def _watch(self, route: _Route, sub: Subscription) -> None:
        if not self._observers:
            return
        observers, name = self._observers, route.name

        def observe(msg: Message, settlement: str) -> None:
            for observer in observers:
                observer(name, msg, settlement)

        sub._observer = observe

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
        sig = route.signature
        if sig.is_async:
            base = route.func if sig.decode is None else bind(route.func, sig)
        else:
            pool = ThreadPoolExecutor(route.max_in_flight, thread_name_prefix="polybus-handler")
            base = _in_thread(route.func, sig, pool)
        handler = chain(base, self.middleware)
        telemetry = self.bus.telemetry
        depth: asyncio.Task[None] | None = None
        if telemetry is not None:
            handler = _traced(handler, telemetry, self.bus.backend)
        try:
            if await self._open(sub):
                if telemetry is not None and self.bus.capabilities.lag_messages:
                    depth = asyncio.ensure_future(self._watch_depth(route, telemetry))
                await self._serve_with(handler, sub)
        finally:
            if depth is not None:
                depth.cancel()
                await asyncio.gather(depth, return_exceptions=True)
            await sub.close()
            if pool is not None:
                pool.shutdown(wait=False)

    async def _watch_depth(self, route: _Route, telemetry: Telemetry) -> None:
        """The dead-letter depth metric of ``route``'s group, every ``depth_interval``."""
        while True:
            try:
                lag = await self.bus.dead_letter_lag(route.topic, route.group)
            except Exception as exc:  # an outage: the next reading tells
                log.debug("dead-letter depth of %s unavailable: %s", route.name, exc)
            else:
                if lag.messages is not None:
                    telemetry.record_depth(route.topic, route.group, lag.messages)
            await asyncio.sleep(telemetry.depth_interval)

    async def _open(self, sub: Subscription) -> bool:
        """Open the subscription (retrying while the broker is unreachable); False if
        the worker was stopped first."""
        opener = asyncio.ensure_future(sub.open())
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({opener, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not opener.done():
            opener.cancel()
            await asyncio.gather(opener, return_exceptions=True)
            return False
        opener.result()  # a non-transient error ends the worker
        self._subscribed += 1
        if self._subscribed == len(self._routes):
            self._ready.set()
        return True

    async def _serve_with(self, handler: Handler, sub: Subscription) -> None:
        tasks: set[asyncio.Task[None]] = set()
        current_task = asyncio.current_task

        async def run_one(msg: Message) -> None:
            try:
                await handler(msg)
            except PERMANENT as exc:
                if not msg.settled:  # no middleware took it: it can never succeed
                    reason = f"permanent error: {type(exc).__name__}"
                    if isinstance(exc, Reject):
                        reason = f"rejected: {exc.reason}"
                    await _settle_quietly(msg.dead_letter(reason, error=exc))
                return
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
            finally:
                # here rather than a done callback: one callback less per message
                tasks.discard(current_task())
            if not msg.settled:
                # not awaited: the task ends now instead of waking again when the ack
                # batch is done; close() sends what is queued (a failure is logged)
                try:
                    sub._ack_unawaited(msg)
                except Exception:
                    log.exception("acking a message failed; the broker will redeliver it")

        create_task = asyncio.get_running_loop().create_task

        def start(msg: Message) -> None:
            tasks.add(create_task(run_one(msg)))

        fetcher = asyncio.ensure_future(sub._serve(start))
        stopper = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({fetcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
        # a handler started until the fetcher has ended is in ``tasks`` before they are
        # awaited below; once it has ended, nothing is dispatched
        fetcher.cancel()
        stopper.cancel()
        fetch_error = None
        try:
            await fetcher
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a non-transient failure: finish what we have, then raise
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


def _traced(handler: Handler, telemetry: Telemetry, system: str) -> Handler:
    """The outermost wrapper: a consumer span per message, continuing its trace."""

    async def traced(msg: Message) -> None:
        with telemetry.processing(system, msg):
            await handler(msg)

    return traced


async def _call(hook: Callable[[], Any]) -> None:
    result = hook()
    if inspect.isawaitable(result):
        await result


async def _settle_quietly(settling: Awaitable[None]) -> None:
    try:
        await settling
    except Exception:
        log.exception("settling a message failed; the broker will redeliver it")


def _in_thread(func: Callable[..., Any], sig: Signature, pool: ThreadPoolExecutor) -> Handler:
    @functools.wraps(func)
    async def call_in_thread(msg: Message) -> None:
        loop = asyncio.get_running_loop()
        # decoded here, in the event loop: a bad body fails before a thread is taken
        await loop.run_in_executor(pool, func, *sig.arguments(msg))

    return call_in_thread
