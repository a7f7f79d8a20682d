"""The message model: what producers hand in and what consumers get out."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from . import _codec
from .errors import SettlementError

if TYPE_CHECKING:
    from collections.abc import Awaitable

T = TypeVar("T")

Settlement = Literal["ack", "nack", "dead_letter"]


# UUID4 bit layout: byte 6 starts with the version nibble 4, byte 8 with the variant
# bits 10. Two 256-byte tables apply them to every id of a batch at once.
_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))


_POOL_SIZE = 256
_pool: Iterator[str] = iter(())
"""Ids made ahead by :func:`new_ids`, handed out by :func:`new_id` (emptied in a forked
child, which must not hand out its parent's ids)."""


def new_id() -> str:
    """A fresh message id: 32 hex digits, random (UUID4, the same as ``uuid4().hex``).

    Taken from ids made 256 at a time (one read of the OS random source per 256: 0.3 µs
    an id, against 2 µs for one read each); ``next`` on the pool is atomic, so threads
    never share an id."""
    global _pool
    for fresh in _pool:
        return fresh
    _pool = pool = iter(new_ids(_POOL_SIZE))
    return next(pool)


def _forget_pool() -> None:
    global _pool
    _pool = iter(())


os.register_at_fork(after_in_child=_forget_pool)


def new_ids(count: int) -> list[str]:
    """``count`` fresh ids as :func:`new_id` makes them, from one read of the OS random
    source. The version and variant bits of every id are set by two slice translations
    and the whole batch is hex-encoded at once: about 0.1 µs per id, against 1 µs for
    ``uuid.uuid4().hex``."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(_VERSION)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    text = raw.hex()
    return [text[i : i + 32] for i in range(0, 32 * count, 32)]


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Outgoing:
    """One message to publish with :meth:`polybus.Bus.publish_many`.

    ``body`` is bytes, str, a pydantic model or any JSON-serialisable value.
    """

    body: object
    key: str | None = None
    headers: Mapping[str, str] | None = None
    id: str | None = None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """An encoded message as adapters publish it: every field final, body bytes."""

    id: str
    body: bytes
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    published_at: datetime = field(default_factory=now)

    @property
    def dedup_id(self) -> str:
        """The id adapters hand to broker deduplication: ``id``, plus the replay count
        for a replayed dead letter (so the broker does not drop the replay)."""
        replay = self.headers.get("polybus-replay")
        return f"{self.id}.r{replay}" if replay else self.id

    @property
    def size(self) -> int:
        """Encoded size used against ``Capabilities.max_message_size``."""
        size = len(self.body) + len(self.key or "") + len(self.id)
        if self.headers:
            size += sum(len(k) + len(v) for k, v in self.headers.items())
        return size


NO_HEADERS: Mapping[str, str] = MappingProxyType({})
"""The shared, read-only headers of an envelope without headers."""

_new = object.__new__
_set_id, _set_body, _set_key, _set_headers, _set_content_type, _set_published_at = (
    Envelope.__dict__[name].__set__  # the slot descriptors of the frozen dataclass
    for name in ("id", "body", "key", "headers", "content_type", "published_at")
)


def make_envelope(
    id: str,
    body: bytes,
    key: str | None,
    headers: Mapping[str, str],
    content_type: str | None,
    published_at: datetime,
) -> Envelope:
    """An :class:`Envelope` from values already checked, built through its slots: a
    frozen dataclass's ``__init__`` sets each field with ``object.__setattr__``, which
    makes it twice as slow, and ``publish_many`` builds one per message."""
    env = _new(Envelope)
    _set_id(env, id)
    _set_body(env, body)
    _set_key(env, key)
    _set_headers(env, headers)
    _set_content_type(env, content_type)
    _set_published_at(env, published_at)
    return env


class _Settler(Protocol):
    def _settle_ack(self, msg: Message) -> Awaitable[None]: ...
    def _settle_nack(self, msg: Message, delay: float | None) -> Awaitable[None]: ...
    def _settle_dead_letter(
        self,
        msg: Message,
        reason: str,
        error: BaseException | None,
        metadata: Mapping[str, str] | None,
    ) -> Awaitable[None]: ...


@dataclass(slots=True, eq=False)
class Message:
    """A delivered message. Settle it exactly once: ``ack``, ``nack`` or ``dead_letter``.

    ``delivery_attempt`` is 1 on the first delivery and grows by one with every
    redelivery, on every backend. ``raw`` is the native client's object, an escape
    hatch whose shape is backend-specific. ``receipt`` belongs to the adapter.
    """

    id: str
    topic: str
    body: bytes
    group: str | None = None
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    published_at: datetime | None = None
    delivery_attempt: int = 1
    raw: Any = None
    receipt: Any = field(default=None, repr=False)
    settlement: Settlement | None = field(default=None, repr=False)
    _settler: _Settler | None = field(default=None, repr=False)
    _via: Any = field(default=None, repr=False)
    """The adapter consumer that delivered the message (set by the core)."""

    def json(self) -> Any:
        """The body parsed as JSON (:class:`~polybus.errors.SerializationError` if not)."""
        return _codec.decode_json(self.body)

    def text(self) -> str:
        """The body as UTF-8 text."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            from .errors import SerializationError

            raise SerializationError(f"body is not UTF-8 text: {exc}") from exc

    def decode(self, model: type[T]) -> T:
        """The body validated into ``model`` (a pydantic model or a plain class)."""
        return _codec.decode_model(self.body, model)

    @property
    def settled(self) -> bool:
        return self.settlement is not None

    async def ack(self) -> None:
        """Confirm processing; the message will not be delivered to this group again."""
        settler = self._settler
        if settler is None or self.settlement is not None:
            settler = self._owner("ack")  # raises, naming the reason
        await settler._settle_ack(self)

    async def nack(self, delay: float | None = None) -> None:
        """Give the message back for redelivery, after ``delay`` seconds if given.

        Redelivery comes with ``delivery_attempt`` one higher. Per-key order holds:
        a later message with the same key is not delivered before this one.
        """
        if delay is not None and delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        await self._owner("nack")._settle_nack(self, delay)

    async def dead_letter(
        self,
        reason: str,
        *,
        error: BaseException | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Move the message to its group's dead-letter destination, then settle it.

        The copy keeps id, key, headers and body byte-exact and adds the reason, the
        error (type, message, bounded traceback), the original topic and group and the
        attempts. If the dead-letter publish fails, the message is nacked, never acked,
        and the publish error is raised.
        """
        await self._owner("dead_letter")._settle_dead_letter(self, reason, error, metadata)

    def _owner(self, verb: str) -> _Settler:
        if self._settler is None:
            raise SettlementError(f"cannot {verb} message {self.id}: it was not delivered")
        if self.settlement is not None:
            raise SettlementError(
                f"cannot {verb} message {self.id}: already settled ({self.settlement})"
            )
        return self._settler
