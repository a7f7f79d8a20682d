"""The adapter SPI: everything a backend implements, and everything it may use.

A backend is a package with an :class:`Adapter` and a :class:`Consumer`, found through
the ``polybus.adapters`` entry-point group (the entry-point name is the URL scheme)::

    [project.entry-points."polybus.adapters"]
    mybroker = "mypackage:MyAdapter"

An adapter imports nothing from polybus but this module, :mod:`polybus.errors` and
the top-level ``polybus`` names (a CI import contract checks it). It reports native
facts only; every guarantee is written once, in the core:

=============================  ==========================================================
the core (once, every backend)  the adapter (native facts)
=============================  ==========================================================
``max_in_flight``, hand-out,    :meth:`Consumer.receive`: up to N deliveries, each with
the buffer a cancelled ``get``  its native ``delivery_attempt`` and a ``receipt``
leaves intact
per-key order (key-ordered      ``Consumer.exclusive_keys``: True when the broker itself
groups): one message per key    never hands out a key's next message early (memory://)
in flight, in-place redelivery
dead-lettering at the limit     nothing: the core publishes the copy and then acks
and on request (template, size
check, confirmation, settle)
lease keeping                   ``Consumer.lease`` and :meth:`Consumer.extend`
supervision: backoff, reopen,   raise :class:`~polybus.errors.BrokerUnavailable` from
health, ``reconnect_timeout``   :meth:`Consumer.receive` (or ``open``) when the broker is
                                unreachable; the core retires the consumer and opens a
                                fresh one with jittered exponential backoff
ack batching: a consumer's      :meth:`Consumer.ack` of a batch, one command where the
acks in one call, one call in   broker has one (XACK, ``basic.ack`` ``multiple``)
flight per consumer
replay isolation, closed-bus    nothing
errors, publish time bound
=============================  ==========================================================

Required: :meth:`Adapter.from_url`, :meth:`Adapter.declare`, :meth:`Adapter.publish`,
:meth:`Adapter.consumer`, :meth:`Consumer.receive`, :meth:`Consumer.ack`,
:meth:`Consumer.nack` and :meth:`Consumer.close` (eight methods). Optional:
``Adapter.open``/``close`` (connections), ``Consumer.open``, ``Consumer.extend``
(leases), ``Consumer.poll`` (messages already held, without waiting: a fast path),
``Consumer.watch`` (a consumer the broker pushes to tells the core when messages arrived),
``Adapter.lag`` (a group's backlog) and ``Adapter.delete_group`` (temporary groups), for
operators.

Threading: every method is called from the event loop that opened the bus; a blocking
native client runs in a thread of the adapter's own. Errors: native exceptions are
translated into :mod:`polybus.errors` at this edge (one ``_errors`` module per adapter),
keeping the native one as ``__cause__``, and never carry a secret (:func:`redact`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from . import headers
from . import headers as h
from ._backoff import Backoff
from ._codec import BYTES, JSON, TEXT
from ._deadletter import DLQ_GROUP
from ._lag import Lag
from ._message import Envelope, Message, new_id, now
from ._names import fit_name
from .capabilities import Capabilities, Ordering
from .config import ParsedUrl, is_secret_name, parse_settings, parse_url, redact, redact_options
from .errors import ConfigError

__all__ = [
    "BYTES",
    "DLQ_GROUP",
    "JSON",
    "TEXT",
    "Adapter",
    "Backoff",
    "Capabilities",
    "Consumer",
    "Envelope",
    "EnvelopeFields",
    "GroupSpec",
    "Lag",
    "Message",
    "Ordering",
    "ParsedUrl",
    "Ready",
    "envelope_headers",
    "fit_name",
    "headers",
    "is_secret_name",
    "new_id",
    "now",
    "parse_settings",
    "parse_url",
    "redact",
    "redact_options",
    "split_envelope_headers",
]


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """A group as the core declares and consumes it."""

    topic: str
    """The polybus topic name (adapters map it onto a broker name, see :func:`fit_name`)."""
    group: str
    """The polybus group name."""
    ordering: Ordering = Ordering.NONE
    """What the group asks for. An adapter that cannot give it raises
    :class:`~polybus.errors.ConfigError` naming the backend and the reason from
    :meth:`Adapter.declare`; one whose broker stores the group's ordering refuses to
    reopen it with the other one (ConfigError naming the conflict)."""
    dead_letter_topic: str | None = None
    """Where the core puts this group's dead letters (the template of
    ``connect(dead_letter_topic=...)`` applied); None for a dead-letter group itself.
    Only an adapter with a native dead-letter backstop needs it."""

    @property
    def key_ordered(self) -> bool:
        return self.ordering is Ordering.KEY


class Ready(Protocol):
    """What :meth:`Consumer.watch` is given: call ``ready()`` when deliveries arrived,
    ``ready(failed=True)`` when the consumer failed."""

    def __call__(self, failed: bool = False) -> None: ...


class Consumer(abc.ABC):
    """The deliveries of one consumer of one group.

    The core calls :meth:`receive` from one task at a time, asking for at most the free
    ``max_in_flight`` slots, so an adapter needs no queue of its own beyond a broker
    prefetch of ``max_in_flight``. :meth:`receive` is cancelled only when the core
    closes the consumer (an application's ``get`` timing out never cancels it).
    """

    exclusive_keys: bool = False
    """True when the broker itself, in a key-ordered group, never hands a key's next
    message to any consumer (not even in the same receive) while an earlier one is
    unsettled, and a nack keeps the key's order (``memory://``; not SQS FIFO, whose
    ReceiveMessage may return several messages of one message group). The core then
    leaves keys to the broker; otherwise it hands out one message per key and
    redelivers a nacked keyed message itself, in place, without :meth:`nack`."""

    lease: float | None = None
    """Seconds an unsettled delivery stays with this consumer unless extended (SQS
    visibility timeout, Pub/Sub ack deadline, JetStream ack wait). The core calls
    :meth:`extend` for every unsettled message each third of it. None: no lease."""

    async def open(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Start consuming; the group exists. :class:`~polybus.errors.BrokerUnavailable`
        makes the core retry with backoff; any other error ends the subscription."""

    @abc.abstractmethod
    async def receive(self, max_messages: int) -> Sequence[Message]:
        """Wait for and return between 1 and ``max_messages`` messages.

        Each :class:`Message` carries ``topic``, ``group``, the native
        ``delivery_attempt`` (1 on the first delivery), ``raw`` and a ``receipt`` the
        adapter settles it by. Messages of one key come out in publish order where the
        group is key-ordered. Raise :class:`~polybus.errors.BrokerUnavailable` when the
        broker cannot be reached: the core retires this consumer (closing it once the
        messages it handed out are settled) and opens a fresh one. If cancelled (by
        :meth:`close`), whatever the call took from the broker goes back with close.
        """

    def poll(self, max_messages: int) -> Sequence[Message]:
        """Up to ``max_messages`` messages the consumer holds already, without waiting
        (an optional fast path: the core tries it before starting a :meth:`receive`).
        The same contract as :meth:`receive` otherwise; never called while a receive is
        pending. Default: none."""
        return ()

    def watch(self, ready: Ready) -> bool:
        """Optional, for a consumer the broker pushes to (it buffers deliveries as
        they arrive, up to a prefetch of ``max_in_flight``): return True to promise to
        call ``ready()`` each time it buffered deliveries :meth:`poll` returns, and
        ``ready(failed=True)`` when it failed (then :meth:`poll` returns nothing and
        :meth:`receive` raises why). ``ready`` is called from the event loop, outside
        any call the core made (from the native client's delivery callback). The core
        then takes what arrived with :meth:`poll` instead of keeping a :meth:`receive`
        pending: a delivery reaches a waiting hand-out one turn of the event loop
        sooner. The core may still call :meth:`receive` (never while it polls). Called once,
        after :meth:`open`. Default: False (the core waits in :meth:`receive`)."""
        return False

    @abc.abstractmethod
    async def ack(self, messages: Sequence[Message]) -> None:
        """Settle ``messages`` (delivered by this consumer, unsettled) as processed:
        none is delivered to this group again. One call for the whole batch: the core
        sends ``Message.ack`` calls in batches, one such call at a time per consumer
        (``ack_many`` calls come as they are made)."""

    @abc.abstractmethod
    async def nack(self, message: Message, delay: float | None) -> None:
        """Give ``message`` back for redelivery, after ``delay`` seconds (None or 0: at
        once); it returns with ``delivery_attempt`` one higher."""

    async def extend(self, messages: Sequence[Message]) -> None:  # noqa: B027
        """Renew the lease of these unsettled messages (only called when ``lease`` is
        set). A message settled meanwhile may be ignored."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop consuming. Every unsettled message goes back to the broker for
        redelivery (in order, for a key-ordered group); nothing is lost. Idempotent."""


class Adapter(abc.ABC):
    """One backend connection. The core makes it with :meth:`from_url`, then
    :meth:`open`; a closed bus never calls it again."""

    name: ClassVar[str]
    """The backend's name: ``kafka``, ``rabbitmq``, ``sqs``, ``pubsub``, ``nats``..."""

    capabilities: Capabilities
    """The frozen guarantees of this backend as configured (may depend on settings)."""

    publish_timeout: float = 30.0
    """Seconds one :meth:`publish` may take. The core cancels a publish that takes
    longer and raises a retryable :class:`~polybus.errors.PublishError` naming every
    id; adapters with their own setting of that name set this attribute from it."""

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> Adapter:
        """Parse ``url`` and ``options`` into typed settings without any I/O.

        A bad value raises :class:`~polybus.errors.ConfigError` naming the field
        (:func:`parse_url`, :func:`parse_settings`). ``options`` are the adapter's
        settings plus ``options={...}``: native client settings, passed through.
        """

    async def open(self) -> None:  # noqa: B027 - a backend without a connection
        """Connect. Raise :class:`~polybus.errors.BrokerUnavailable` within the
        configured ``connect_timeout`` when the broker cannot be reached."""

    async def close(self) -> None:  # noqa: B027
        """Flush and disconnect. Called once; consumers are closed before it."""

    @abc.abstractmethod
    async def declare(self, topic: str, group: GroupSpec | None) -> None:
        """Create ``topic`` if missing, or (``group`` given; the topic exists already)
        the group on it. Idempotent. Once a group is declared, every message published
        to the topic reaches it, consumer or not. A conflicting existing definition, or
        an ordering the backend cannot give, raises :class:`~polybus.errors.ConfigError`.
        """

    @abc.abstractmethod
    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        """Publish a batch (the topic is declared) and return once the broker
        confirmed every message.

        A batch is a ``publish_many`` call or concurrent single publishes (the core
        coalesces those made while a call to the topic is in flight, up to 500
        messages or 1 MiB), so keep the messages in order and name what failed: raise
        :class:`~polybus.errors.PublishError` (``retryable`` set, ``failed_ids``
        naming the unconfirmed ones, so that only their callers fail) or
        :class:`~polybus.errors.MessageTooLarge` (the core then sends the batch's
        messages again one by one, so each caller gets its own answer).
        """

    @abc.abstractmethod
    def consumer(self, group: GroupSpec, *, max_in_flight: int) -> Consumer:
        """A new, not yet opened, consumer of ``group`` (declared already)."""

    async def delete_group(self, group: GroupSpec) -> None:
        """Remove ``group`` and whatever the broker keeps for it (its queue,
        subscription, consumer, offsets), for temporary groups such as
        ``polybus tail``'s. Idempotent. Optional: the default refuses."""
        raise ConfigError(
            "group", f"the {self.name} backend cannot delete groups (polybus tail needs it)"
        )

    async def lag(self, group: GroupSpec) -> Lag:
        """``group``'s backlog and the age of its oldest unsettled message, read from
        the broker without disturbing the group (no consuming, no delivery counts
        changed); None for what the broker cannot say (set ``Capabilities.lag_messages``
        and ``lag_seconds`` to match). A group that does not exist raises ConfigError.
        Optional; the default knows nothing."""
        return Lag(None, None)


# -- the envelope codec for brokers without native fields ------------------------


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
    """Inverse of :func:`envelope_headers`: the envelope fields and the other headers.
    A foreign message (no ``polybus-id``) gets ``id=None``: the adapter supplies the
    broker's own identity of the message (see the adapter READMEs)."""
    fields = dict(all_headers)
    stamp = fields.pop(h.PUBLISHED_AT, None)
    published = None
    if stamp is not None and stamp.isdigit():
        published = datetime.fromtimestamp(int(stamp) / 1000, UTC)
    return EnvelopeFields(
        id=fields.pop(h.ID, None),
        key=fields.pop(h.KEY, None),
        content_type=fields.pop(h.CONTENT_TYPE, None),
        published_at=published,
        headers=fields,
    )
