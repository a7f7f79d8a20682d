"""One consumer of a group: pull requests on a private inbox, settled by the native Msg.

:meth:`NatsConsumer.receive` keeps at most one pull request outstanding, asking for no
more than the free slots the core offers, so messages fetched and unsettled never
exceed ``max_in_flight``. A request may still deliver after ``receive`` returned (the
server fills it as messages arrive, until it expires); those wait in a small buffer
for the next ``receive``, their leases renewed with the handed-out ones.

A message is settled by its receipt, the native :class:`nats.aio.msg.Msg`: ack ``+ACK``,
nack ``-NAK`` (with a delay), extend ``+WPI``. :meth:`NatsConsumer.close` NAKs every
message received and not settled, in stream order, once it has drained the inbox (what
the server delivered meanwhile is NAKed too): nothing waits out ``ack_wait`` because a
consumer closed. The consumer never imports the adapter: it gets the connection, the group's
names and the settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from polybus.errors import BrokerUnavailable, PolybusError, SettlementError
from polybus.spi import Consumer, Message

from . import _errors, _headers, _topology
from ._settings import NatsSettings
from ._topology import GroupRef

__all__ = ["NatsConsumer"]

log = logging.getLogger("polybus.nats")

GRACE = 2.0
"""Seconds past a pull request's expiry after which it counts as lost (no status came:
the request or its answer was lost, or the consumer was deleted meanwhile)."""
LAPSE_MARGIN = 0.9
"""A buffered message not renewed for this share of the lease counts as lapsed."""
ENDED = frozenset({"404", "408", "409", "503"})
"""Statuses that end a pull request."""
RETURN_WAIT = 1.0
"""Seconds :meth:`NatsConsumer.close` waits for messages it NAKed while its pull request
waited to come back to that request (they normally do within a millisecond; one the
server handed to another consumer's request never does)."""


class NatsConsumer(Consumer):
    """Not thread-safe: used from the event loop of its adapter's connection."""

    exclusive_keys = False
    """JetStream has no key affinity: the core gates keys (key-ordered groups also have
    ``max_ack_pending = 1``, see the README)."""

    def __init__(
        self, nc: NATS, js: JetStreamContext, ref: GroupRef, settings: NatsSettings
    ) -> None:
        self.nc = nc
        self.js = js
        self.ref = ref
        self.settings = settings
        self.lease: float = settings.ack_wait
        self._held: dict[int, Msg] = {}
        """Received and not settled (buffered or handed out), by ``id`` of the Msg."""
        self._buffer: deque[tuple[Msg, float]] = deque()
        """Received, not handed out yet, with the time its lease was last renewed."""
        self._outstanding = 0
        self._deadline = 0.0
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._error: PolybusError | None = None
        self._closed = False
        self._given_back = False
        self._returning: set[int] = set()
        """Stream sequences NAKed (without a delay) while our pull request waited: the
        server hands them straight back to it (see :meth:`close`)."""
        self._returned = asyncio.Event()

    def __repr__(self) -> str:
        return f"<NatsConsumer topic={self.ref.topic.topic!r} group={self.ref.group!r}>"

    def connection_lost(self) -> None:
        """The adapter's connection dropped (nats-py reconnects it): from now on
        :meth:`receive` raises BrokerUnavailable, so the core retires this consumer
        (its pull request may be gone with the old connection) and opens a fresh one
        once the connection is back. Settling what it handed out still works."""
        if self._error is None:
            self._error = BrokerUnavailable(f"the NATS connection of {self!r} was lost")
        self._wake.set()

    def _check_connection(self) -> None:
        if not self.nc.is_connected:
            state = "closed" if self.nc.is_closed else "disconnected (reconnecting)"
            raise BrokerUnavailable(f"NATS connection {state}: {self!r} cannot receive")

    # -- opening and receiving -------------------------------------------------------

    async def open(self) -> None:
        """Check that the group exists and subscribe the private inbox."""
        self._check_connection()
        if await _topology.consumer_info(self.js, self.ref) is None:
            raise self._gone()
        try:
            self._sub = await self.nc.subscribe(self.nc.new_inbox(), cb=self._on_message)
        except _errors.NATIVE as exc:
            raise _errors.unavailable(exc, "subscribe") from exc

    def _gone(self) -> PolybusError:
        return PolybusError(
            f"nats: group {self.ref.group!r} of topic {self.ref.topic.topic!r} was deleted "
            f"({_topology.consumer_label(self.ref)} no longer exists); subscribe again to "
            "create it (it then starts with the messages published after that)"
        )

    async def receive(self, max_messages: int) -> Sequence[Message]:
        while True:
            self._wake.clear()  # before looking: a delivery from here on wakes the wait
            if self._error is not None:
                raise self._error
            if self._closed or self._sub is None:
                raise SettlementError(f"{self!r} is not open")
            self._check_connection()
            batch = self._hand_out(max_messages)
            if batch:
                return batch
            if self._outstanding == 0:
                await self._pull(max_messages)
            elif time.monotonic() > self._deadline:
                # no status ended the last request: it was lost, or the group is gone
                if await _topology.consumer_info(self.js, self.ref) is None:
                    raise self._gone()
                await self._pull(max_messages)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self._deadline - time.monotonic())):
                    await self._wake.wait()

    def poll(self, max_messages: int) -> Sequence[Message]:
        if self._error is not None or self._closed or self._sub is None:
            return ()  # receive says why
        return self._hand_out(max_messages)

    def _hand_out(self, max_messages: int) -> list[Message]:
        out: list[Message] = []
        # a margin: the server started the lease when it sent the message
        lapsed = time.monotonic() - self.lease * LAPSE_MARGIN
        buffer = self._buffer
        while buffer and len(out) < max_messages:
            msg, renewed = buffer.popleft()
            if renewed <= lapsed:
                # its lease ran out while it waited here: JetStream redelivers it, so
                # this copy is stale (handing it out could break a key's order)
                self._held.pop(id(msg), None)
                continue
            out.append(self._message(msg))
        return out

    async def _pull(self, batch: int) -> None:
        assert self._sub is not None
        expires = self.settings.fetch_expires
        request = json.dumps({"batch": batch, "expires": int(expires * 1e9)}).encode()
        self._outstanding = batch
        self._deadline = time.monotonic() + expires + GRACE
        try:
            await self.nc.publish(self.ref.next_subject, request, reply=self._sub.subject)
        except _errors.NATIVE as exc:
            self._outstanding = 0
            raise _errors.unavailable(exc, "pull request") from exc

    async def _on_message(self, msg: Msg) -> None:
        status = (msg.headers or {}).get("Status")
        if status is not None:
            self._on_status(status, str((msg.headers or {}).get("Description", "")))
            return
        if not msg.reply:
            return  # not a JetStream delivery (nothing else publishes to this inbox)
        if self._returning:
            self._returning.discard(_delivery(msg)[2])
            if not self._returning:
                self._returned.set()
        if self._given_back:
            with contextlib.suppress(*_errors.NATIVE):
                await msg.nak()  # a late answer to a pull request of this consumer
            return
        self._held[id(msg)] = msg
        if self._closed:
            return  # closing: given back with the others
        self._outstanding = max(0, self._outstanding - 1)
        self._buffer.append((msg, time.monotonic()))
        self._wake.set()

    def _on_status(self, status: str, description: str) -> None:
        if status not in ENDED:
            return  # 100: heartbeat / flow control
        self._outstanding = 0
        self._wake.set()
        self._returning.clear()  # the request is over: nothing comes back to it now
        self._returned.set()
        if status == "503":  # no responders: JetStream is not there (yet)
            self._error = BrokerUnavailable(f"JetStream unavailable for {self!r}")
        elif status == "409":
            log.warning("pull request refused for %r: %s", self, description)
            # deleted: permanent; anything else (too many waiting requests...) passes:
            # the core retires this consumer and opens another after a backoff
            self._error = (
                self._gone()
                if "deleted" in description.lower()
                else BrokerUnavailable(f"pull request refused for {self!r}: {description}")
            )

    def _message(self, msg: Msg) -> Message:
        fields = _headers.decode(msg.headers)
        delivered, stream, sequence = _delivery(msg)
        return Message(
            # a foreign message: its stream sequence is its identity (stable, unique)
            id=fields.id or f"{stream}:{sequence}",
            topic=self.ref.topic.topic,
            body=msg.data,
            group=self.ref.group,
            key=fields.key,
            headers=fields.headers,
            content_type=fields.content_type,
            published_at=fields.published_at or msg.metadata.timestamp,
            delivery_attempt=delivered,
            raw=msg,
            receipt=msg,
        )

    # -- settling --------------------------------------------------------------------

    def _take(self, messages: Sequence[Message]) -> list[Msg]:
        """The native messages of ``messages``, no longer held; SettlementError (and
        nothing taken) if one is not unsettled on this consumer."""
        natives: list[Msg] = [m.receipt for m in messages]
        for message, native in zip(messages, natives, strict=True):
            if id(native) not in self._held:
                raise SettlementError(f"message {message.id} is not unsettled on {self!r}")
        for native in natives:
            del self._held[id(native)]
        return natives

    async def ack(self, messages: Sequence[Message]) -> None:
        """``+ACK`` each (JetStream has no batch ack for explicit-ack consumers; the
        acks go out in one write). An ack is not confirmed by the server."""
        natives = self._take(messages)
        for index, native in enumerate(natives):
            try:
                await native.ack()
            except _errors.NATIVE as exc:
                self._hold(natives[index:])  # not acked: close gives them back
                raise _errors.unavailable(exc, "ack") from exc

    async def nack(self, message: Message, delay: float | None) -> None:
        (native,) = self._take([message])
        try:
            await native.nak(delay=delay or None)
        except _errors.NATIVE as exc:
            self._hold([native])
            raise _errors.unavailable(exc, "nack") from exc
        if self._outstanding and not delay:
            self._returning.add(_delivery(native)[2])
            self._returned.clear()

    def _hold(self, natives: Iterable[Msg]) -> None:
        for native in natives:
            self._held[id(native)] = native

    async def extend(self, messages: Sequence[Message]) -> None:
        """``+WPI`` for each unsettled message, and for the buffered ones."""
        natives = [m.receipt for m in messages if id(m.receipt) in self._held]
        now = time.monotonic()
        natives += [msg for msg, _ in self._buffer]
        self._buffer = deque((msg, now) for msg, _ in self._buffer)
        results = await asyncio.gather(
            *(native.in_progress() for native in natives), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise _errors.unavailable(result, "in-progress ack") from result

    # -- closing ---------------------------------------------------------------------

    async def close(self) -> None:
        """Let what we NAKed while our pull request waited come back to it, drop
        interest in the inbox, make the server forget our pull request, then NAK what
        is held. (A NAK while our request is pending hands the message straight back to
        it; nats-server 2.9 loses track of a NAKed message whose only waiting request
        lost interest, until ``ack_wait``: README, "Known behaviours".)"""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._returning and self.nc.is_connected:
            # on its way back to our request: an UNSUB now would leave it to ack_wait
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETURN_WAIT):
                    await self._returned.wait()
        sub, self._sub = self._sub, None
        if sub is not None:
            await self._drop_interest(sub)  # late deliveries join the held ones
        if self.nc.is_connected:
            # consumer info prunes waiting requests without interest (ours), so no NAK
            # of this group, ours or another consumer's, meets it later
            with contextlib.suppress(PolybusError):
                await _topology.consumer_info(self.js, self.ref)
        held = sorted(self._held.values(), key=_stream_sequence)
        self._held.clear()
        self._buffer.clear()
        self._given_back = True
        for native in held:  # in stream order: a key's earliest goes back first
            with contextlib.suppress(*_errors.NATIVE):
                await native.nak()

    async def _drop_interest(self, sub: Subscription) -> None:
        if self.nc.is_connected:
            # UNSUB, then a round trip: what the server sent before it saw the UNSUB
            # still reaches _on_message; after it, the server has no interest left
            try:
                async with asyncio.timeout(self.settings.request_timeout):
                    await sub.drain()  # type: ignore[no-untyped-call]
                return
            except _errors.NATIVE as exc:
                log.debug("draining %r failed: %s", self, _errors.describe(exc))
        with contextlib.suppress(*_errors.NATIVE):
            await sub.unsubscribe()


def _delivery(msg: Msg) -> tuple[int, str, int]:
    """The delivery count, stream and stream sequence of a JetStream delivery, read
    from its ack subject ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...``
    (nats-py's ``Msg.metadata`` builds three frozen dataclasses and a datetime for
    them: a tenth of a Worker's time per message here); other subject forms (with a
    domain) through ``Msg.metadata``."""
    tokens = msg.reply.split(".")
    if len(tokens) == _ACK_TOKENS and tokens[0] == "$JS" and tokens[1] == "ACK":
        return int(tokens[4]), tokens[2], int(tokens[5])
    meta = msg.metadata
    return meta.num_delivered, meta.stream, meta.sequence.stream


_ACK_TOKENS = 9
"""Tokens of the ack subject without a domain (nats-server 2.x)."""


def _stream_sequence(msg: Msg) -> int:
    try:
        return msg.metadata.sequence.stream
    except Exception:  # not a JetStream message: order does not matter
        return 0
