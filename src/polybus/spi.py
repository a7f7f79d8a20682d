"""The adapter SPI: what a backend implements to plug into polybus.

An adapter is two small classes, found through the ``polybus.adapters`` entry-point
group (the entry-point name is the URL scheme it serves)::

    [project.entry-points."polybus.adapters"]
    mybroker = "mypackage:MyAdapter"

:class:`Adapter` opens and closes the connection, declares topics and groups, publishes
batches with confirmation and makes a :class:`Consumer` per subscription. A
:class:`Consumer` fetches messages and settles them. Nothing here is shaped like one
broker's protocol; everything above it (backpressure, encoding, dead-letter records,
retries, idempotency, the sync facade) is written once in the core.

Adapters translate native exceptions into :mod:`polybus.errors` at this edge, keeping
the native one as ``__cause__``. Every method is called from the event loop; blocking
native clients run in a thread (:func:`asyncio.to_thread` or a dedicated I/O thread).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from . import headers as h
from ._message import Envelope, Message
from .capabilities import Capabilities

__all__ = [
    "Adapter",
    "Consumer",
    "Envelope",
    "EnvelopeFields",
    "Message",
    "GroupSettings",
    "envelope_headers",
    "split_envelope_headers",
]


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """What the core asks of a group when it declares it."""

    max_deliveries: int | None = None
    """Deliveries after which the broker itself dead-letters (where it can). None means
    no preference: an existing group keeps its limit, a new one gets the adapter's
    default. A different limit for an existing group is applied where the broker can
    change it in place, else :class:`polybus.errors.ConfigError` names the conflict."""


class Consumer(abc.ABC):
    """The deliveries of one subscription (one group of one topic, one consumer).

    The core never holds more than ``max_in_flight`` unsettled messages of a consumer
    and asks :meth:`fetch` for at most the free slots, so an adapter needs no queue of
    its own beyond a broker prefetch of ``max_in_flight``.
    """

    @abc.abstractmethod
    async def open(self) -> None:
        """Start consuming. The group already exists (see :meth:`Adapter.ensure_group`)."""

    @abc.abstractmethod
    async def fetch(self, max_messages: int) -> Sequence[Message]:
        """Wait for and return between 1 and ``max_messages`` messages.

        Each :class:`Message` carries ``topic``, ``group``, ``delivery_attempt`` (1 on the
        first delivery), ``raw`` and a ``receipt`` the adapter uses to settle it.
        Must be cancellation-safe: a message taken from the broker by a cancelled call
        is not lost (it is returned by a later call, or released by :meth:`close`).
        Messages with the same key come out in publish order where ``Capabilities``
        promise it.
        """

    @abc.abstractmethod
    async def ack(self, message: Message) -> None:
        """Settle as processed; it must not be delivered to this group again."""

    async def ack_many(self, messages: Sequence[Message]) -> None:
        """Ack several messages at once (:meth:`polybus.Subscription.ack_many`).
        Default: :meth:`ack` each; adapters with a cheaper batch form override it."""
        for message in messages:
            await self.ack(message)

    @abc.abstractmethod
    async def nack(self, message: Message, delay: float | None) -> None:
        """Give back for redelivery (after ``delay`` seconds if not None) with
        ``delivery_attempt`` one higher. Later messages of the same key must not
        overtake it where ``Capabilities.ordering`` is ``PER_KEY``."""

    async def dead_lettered(self, message: Message) -> None:
        """Settle a message whose dead-letter copy has been confirmed. Default: ack."""
        await self.ack(message)

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop consuming. Every message fetched and not settled goes back to the
        broker for redelivery (no message is lost; its attempt count may grow)."""


class Adapter(abc.ABC):
    """One backend connection. Create with :meth:`from_url`, then :meth:`open`."""

    name: ClassVar[str]
    """The backend's name: ``kafka``, ``rabbitmq``, ``sqs``, ``pubsub``, ``nats``..."""

    capabilities: Capabilities
    """The frozen guarantees of this backend as configured (may depend on settings)."""

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> Adapter:
        """Parse ``url`` and ``options`` into typed settings without any I/O.

        A bad value raises :class:`polybus.errors.ConfigError` naming the field.
        ``options`` are polybus options plus native client settings passed through.
        """

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect. Raise :class:`polybus.errors.BrokerUnavailable` within the
        configured ``connect_timeout`` when the broker cannot be reached."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and disconnect. Idempotent."""

    @abc.abstractmethod
    async def ensure_topic(self, topic: str) -> None:
        """Create ``topic`` if missing (idempotent); a conflicting existing definition
        raises :class:`polybus.errors.ConfigError`."""

    @abc.abstractmethod
    async def ensure_group(self, topic: str, group: str, settings: GroupSettings) -> None:
        """Create ``group`` on ``topic`` if missing (idempotent). Once this returns,
        every message published to the topic reaches the group, consumer or not."""

    @abc.abstractmethod
    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        """Publish a batch and return once the broker confirmed every message.

        Raise :class:`polybus.errors.PublishError` (``retryable`` set, ``failed_ids``
        naming the unconfirmed ones) or :class:`polybus.errors.MessageTooLarge`.
        """

    @abc.abstractmethod
    def consumer(self, topic: str, group: str, *, max_in_flight: int) -> Consumer:
        """A new, not yet opened, consumer of ``group`` on ``topic``."""

    dead_letter_template: str = "{topic}.{group}.dlq"
    """How dead-letter topics are named; set from ``connect(dead_letter_topic=...)``."""

    def dead_letter_topic(self, topic: str, group: str) -> str:
        """The topic that receives ``group``'s dead letters (a regular topic). Adapters
        that must sanitise names do so on the result of this default."""
        return self.dead_letter_template.format(topic=topic, group=group)

    def redacted_url(self) -> str:
        """The connection URL without secrets, for reprs and logs."""
        return f"{self.name}://"


def envelope_headers(env: Envelope) -> dict[str, str]:
    """The user headers plus polybus's envelope fields, for brokers without native
    fields for id, key, content type and publish time."""
    out = dict(env.headers)
    out[h.ID] = env.id
    if env.key is not None:
        out[h.KEY] = env.key
    if env.content_type is not None:
        out[h.CONTENT_TYPE] = env.content_type
    out[h.PUBLISHED_AT] = str(int(env.published_at.timestamp() * 1000))
    return out


@dataclass(frozen=True, slots=True)
class EnvelopeFields:
    id: str | None
    key: str | None
    content_type: str | None
    published_at: datetime | None
    headers: dict[str, str]


def split_envelope_headers(all_headers: Mapping[str, str]) -> EnvelopeFields:
    """Inverse of :func:`envelope_headers`: the envelope fields and the other headers."""
    headers = dict(all_headers)
    stamp = headers.pop(h.PUBLISHED_AT, None)
    published = None
    if stamp is not None and stamp.isdigit():
        published = datetime.fromtimestamp(int(stamp) / 1000, UTC)
    return EnvelopeFields(
        id=headers.pop(h.ID, None),
        key=headers.pop(h.KEY, None),
        content_type=headers.pop(h.CONTENT_TYPE, None),
        published_at=published,
        headers=headers,
    )
