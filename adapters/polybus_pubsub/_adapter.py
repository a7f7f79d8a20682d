"""``pubsub://PROJECT``: the Google Cloud Pub/Sub adapter (see README.md).

Topology: a polybus topic is a Pub/Sub topic, a group is a subscription of it (ids
from :mod:`._names`). Every group subscription gets a dead-letter policy, so that
Pub/Sub counts deliveries (``delivery_attempt``) and moves a message that keeps
failing to the group's dead-letter topic, which has its own ``polybus-dlq``
subscription. Publishing and consuming use the async gRPC clients (no threads):
concurrent publishes are coalesced into ``Publish`` RPCs of up to 1000 messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.protobuf import field_mask_pb2
from google.pubsub_v1 import types as ps

from polybus._deadletter import DLQ_GROUP
from polybus.capabilities import Capabilities, Ordering
from polybus.errors import BrokerUnavailable, ConfigError, MessageTooLarge, PolybusError
from polybus.spi import Adapter, Consumer, Envelope, GroupSettings

from . import _errors, _names, _settings, _wire
from ._batch import Coalescer
from ._clients import Clients, make_clients

log = logging.getLogger("polybus.pubsub")

MIN_DELIVERY_ATTEMPTS = 5
MAX_DELIVERY_ATTEMPTS = 100
"""Pub/Sub's allowed range for a dead-letter policy's max_delivery_attempts."""
MAX_NACK_DELAY = 600
MAX_REQUEST_BYTES = 9_500_000
"""A Publish request is capped at 10 MB; stay below it with room for framing."""
_ADMIN_TIMEOUT = 30.0


def native_attempts(max_deliveries: int | None) -> int:
    """The policy's max_delivery_attempts for a group limit of ``max_deliveries``.

    polybus dead-letters (with its metadata) a message delivered more than
    ``max_deliveries`` times when it sees it, so the broker is set one higher as the
    backstop, clamped to Pub/Sub's 5..100. Without a limit the policy still exists
    (100 attempts) so that ``delivery_attempt`` is populated.
    """
    if max_deliveries is None:
        return MAX_DELIVERY_ATTEMPTS
    return max(MIN_DELIVERY_ATTEMPTS, min(MAX_DELIVERY_ATTEMPTS, max_deliveries + 1))


class PubSubAdapter(Adapter):
    """Google Cloud Pub/Sub (or its emulator) through google-cloud-pubsub."""

    name = "pubsub"

    def __init__(self, settings: _settings.PubSubSettings) -> None:
        self.settings = settings
        self.capabilities = Capabilities(
            ordering=Ordering.PER_KEY if settings.ordering else Ordering.NONE,
            fan_out=True,
            competing_consumers=True,
            persistent=True,
            replay=False,
            native_delivery_count=True,
            native_dead_letter=True,
            delayed_redelivery=True,
            max_delay=float(MAX_NACK_DELAY),
            broker_dedup=False,
            max_message_size=_wire.MAX_MESSAGE_BYTES - 10_000,
            max_headers=80,
        )
        self._clients: Clients | None = None
        self._publishers: dict[str, Coalescer[ps.PubsubMessage]] = {}
        self.limits: dict[tuple[str, str], int | None] = {}
        """Each group's max_deliveries as declared by ensure_group (for consumers)."""

    def __repr__(self) -> str:
        return f"<PubSubAdapter {self.redacted_url()}>"

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> PubSubAdapter:
        return cls(_settings.parse(url, options))

    def redacted_url(self) -> str:
        emulator = self.settings.emulator
        suffix = f"?emulator={emulator}" if emulator else ""
        return f"pubsub://{self.settings.project}{suffix}"

    # -- connection -----------------------------------------------------------------

    @property
    def clients(self) -> Clients:
        if self._clients is None:
            raise PolybusError("the pubsub adapter is not open")
        return self._clients

    async def open(self) -> None:
        if self._clients is not None:
            return
        try:
            clients = make_clients(self.settings)
        except Exception as exc:
            raise _errors.admin_error(exc, "creating Pub/Sub clients", "options") from exc
        try:
            await self._probe(clients)
        except BaseException:
            await clients.close()
            raise
        self._clients = clients

    async def _probe(self, clients: Clients) -> None:
        # any answer (even NotFound / PermissionDenied) proves the service is reachable
        deadline = time.monotonic() + self.settings.connect_timeout
        probe = self.topic_path("polybus-connect-probe")
        last: BaseException | None = None
        while (left := deadline - time.monotonic()) > 0:
            try:
                await clients.publisher.get_topic(topic=probe, timeout=left, retry=None)
                return
            except (gexc.NotFound, gexc.PermissionDenied):
                return
            except Exception as exc:
                if not _errors.is_transient(exc):
                    raise _errors.admin_error(exc, "connecting", "url") from exc
                last = exc
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        raise BrokerUnavailable(
            f"Pub/Sub ({self.settings.endpoint_label()}) not reachable within "
            f"{self.settings.connect_timeout} s"
        ) from last

    async def close(self) -> None:
        clients, self._clients = self._clients, None
        if clients is None:
            return
        for coalescer in self._publishers.values():
            await coalescer.drain()
        self._publishers.clear()
        await clients.close()

    # -- topology -------------------------------------------------------------------

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.settings.project}/topics/{_names.topic_id(topic)}"

    def subscription_path(self, topic: str, group: str) -> str:
        sub = _names.subscription_id(topic, group)
        return f"projects/{self.settings.project}/subscriptions/{sub}"

    async def ensure_topic(self, topic: str) -> None:
        path = self.topic_path(topic)
        try:
            await self.clients.publisher.create_topic(name=path, timeout=_ADMIN_TIMEOUT)
            log.info("created topic %s", path)
        except gexc.AlreadyExists:
            pass
        except Exception as exc:
            raise _errors.admin_error(exc, f"creating topic {topic!r}", "topic") from exc

    async def ensure_group(self, topic: str, group: str, settings: GroupSettings) -> None:
        self.limits[(topic, group)] = settings.max_deliveries
        if settings.max_deliveries is not None and settings.max_deliveries >= 100:
            log.warning(
                "topic=%s group=%s: max_deliveries=%d is above Pub/Sub's 100; the broker "
                "dead-letters at 100",
                topic,
                group,
                settings.max_deliveries,
            )
        dlq = self.dead_letter_topic(topic, group)
        await self.ensure_topic(dlq)
        if group == DLQ_GROUP:
            # dead letters of dead letters end in a terminal subscription (no policy)
            last = self.dead_letter_topic(dlq, DLQ_GROUP)
            await self.ensure_topic(last)
            await self._ensure_subscription(dlq, DLQ_GROUP, None, None)
            await self._ensure_subscription(topic, group, last, None)
            return
        await self._ensure_subscription(dlq, DLQ_GROUP, None, None)
        await self._ensure_subscription(topic, group, dlq, settings.max_deliveries)

    async def _ensure_subscription(
        self, topic: str, group: str, dlq: str | None, max_deliveries: int | None
    ) -> None:
        s = self.settings
        wanted = ps.Subscription(
            name=self.subscription_path(topic, group),
            topic=self.topic_path(topic),
            ack_deadline_seconds=s.ack_deadline,
            enable_message_ordering=s.ordering,
            enable_exactly_once_delivery=s.exactly_once,
            # never expire an idle group: it must keep receiving while no one reads it
            expiration_policy=ps.ExpirationPolicy(),
        )
        if dlq is not None:
            wanted.dead_letter_policy = ps.DeadLetterPolicy(
                dead_letter_topic=self.topic_path(dlq),
                max_delivery_attempts=native_attempts(max_deliveries),
            )
        subscriber = self.clients.subscriber
        action = f"creating group {group!r} on topic {topic!r}"
        try:
            await subscriber.create_subscription(request=wanted, timeout=_ADMIN_TIMEOUT)
            log.info("created subscription %s", wanted.name)
            return
        except gexc.AlreadyExists:
            pass
        except Exception as exc:
            raise _errors.admin_error(exc, action, "group") from exc
        try:
            have = await subscriber.get_subscription(subscription=wanted.name)
        except Exception as exc:
            raise _errors.admin_error(exc, action, "group") from exc
        await self._reconcile(topic, group, have, wanted)

    async def _reconcile(
        self, topic: str, group: str, have: ps.Subscription, wanted: ps.Subscription
    ) -> None:
        """Mutable differences are updated (latest declaration wins); immutable ones
        (the topic, message ordering) are a conflict the user has to resolve."""
        if have.topic != wanted.topic:
            raise ConfigError(
                "group",
                f"subscription {have.name} for group {group!r} exists on another topic "
                f"({have.topic}), not {wanted.topic}",
            )
        if have.enable_message_ordering != wanted.enable_message_ordering:
            raise ConfigError(
                "ordering",
                f"group {group!r} on topic {topic!r} exists with message ordering "
                f"{'on' if have.enable_message_ordering else 'off'}; it cannot be changed",
            )
        paths = []
        if have.ack_deadline_seconds != wanted.ack_deadline_seconds:
            paths.append("ack_deadline_seconds")
        if have.enable_exactly_once_delivery != wanted.enable_exactly_once_delivery:
            paths.append("enable_exactly_once_delivery")
        if have.dead_letter_policy != wanted.dead_letter_policy:
            paths.append("dead_letter_policy")
        if not paths:
            return
        try:
            await self.clients.subscriber.update_subscription(
                subscription=wanted,
                update_mask=field_mask_pb2.FieldMask(paths=paths),
                timeout=_ADMIN_TIMEOUT,
            )
        except Exception as exc:
            raise _errors.admin_error(exc, f"updating group {group!r}", "group") from exc
        log.info("updated subscription %s: %s", wanted.name, ", ".join(paths))

    # -- publishing -----------------------------------------------------------------

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        messages = []
        for env in envelopes:
            wire = _wire.encode(env)
            if wire.size > _wire.MAX_MESSAGE_BYTES:
                raise MessageTooLarge(
                    f"message {env.id} for topic {topic!r} is {wire.size} bytes with its "
                    f"attributes; Pub/Sub accepts {_wire.MAX_MESSAGE_BYTES}",
                    size=wire.size,
                    limit=_wire.MAX_MESSAGE_BYTES,
                )
            messages.append(
                ps.PubsubMessage(
                    data=wire.data, ordering_key=wire.ordering_key, attributes=wire.attributes
                )
            )
        try:
            await self._publisher(topic).submit(messages)
        except Exception as exc:
            ids = [env.id for env in envelopes]
            raise _errors.publish_error(exc, topic, ids) from exc

    def _publisher(self, topic: str) -> Coalescer[ps.PubsubMessage]:
        coalescer = self._publishers.get(topic)
        if coalescer is None:
            path = self.topic_path(topic)
            client = self.clients.publisher
            timeout = self.settings.publish_timeout

            async def send(batch: list[ps.PubsubMessage]) -> None:
                await client.publish(topic=path, messages=batch, timeout=timeout)

            coalescer = Coalescer(
                send,
                max_items=self.settings.batch_max_messages,
                max_bytes=MAX_REQUEST_BYTES,
                weight=lambda m: ps.PubsubMessage.pb(m).ByteSize(),
            )
            self._publishers[topic] = coalescer
        return coalescer

    # -- consuming ------------------------------------------------------------------

    def consumer(self, topic: str, group: str, *, max_in_flight: int) -> Consumer:
        from ._consumer import PubSubConsumer

        return PubSubConsumer(self, topic, group, max_in_flight=max_in_flight)
