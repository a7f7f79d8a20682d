"""``pubsub://PROJECT``: the Google Cloud Pub/Sub adapter (see README.md).

Topology is in :mod:`._topology` (a topic is a Pub/Sub topic, a group a subscription
of it), consuming in :mod:`._consumer`. Publishing and consuming use the async gRPC
clients (no threads): concurrent publishes of a topic are coalesced into ``Publish``
RPCs of up to 1000 messages (:mod:`._batch`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core import retry_async
from google.pubsub_v1 import types as ps

from polybus.errors import BrokerUnavailable, ConfigError, MessageTooLarge, PolybusError
from polybus.spi import Adapter, Backoff, Capabilities, Consumer, Envelope, GroupSpec, Lag

from . import _errors, _settings, _wire
from ._batch import cut
from ._clients import Clients, make_clients
from ._consumer import MAX_NACK_DELAY, PubSubConsumer
from ._topology import ADMIN_TIMEOUT, MAX_DELIVERY_ATTEMPTS, Paths, Topology

log = logging.getLogger("polybus.pubsub")

MAX_REQUEST_BYTES = 9_500_000
"""A Publish request is capped at 10 MB; stay below it with room for framing."""
PROBE_BACKOFF = Backoff(initial=0.05, multiplier=2.0, max_delay=1.0, jitter="equal")
"""Waits between attempts to reach Pub/Sub in :meth:`PubSubAdapter.open`."""

CAPABILITIES = Capabilities(
    competing_consumers=True,
    key_order=True,
    key_order_competing=True,
    fan_out=True,
    persistent=True,
    replay=False,
    native_delivery_count=True,
    native_dead_letter=True,
    delayed_redelivery=True,
    max_delay=float(MAX_NACK_DELAY),
    broker_dedup=False,
    max_message_size=_wire.MAX_MESSAGE_BYTES - 10_000,
    max_headers=80,
    # the core dead-letters at delivery max_deliveries + 1, before Pub/Sub's policy
    # (MAX_DELIVERY_ATTEMPTS) would move the message itself
    max_deliveries=MAX_DELIVERY_ATTEMPTS - 1,
    stable_foreign_ids=True,  # Pub/Sub's message_id
    # the Pub/Sub API has no backlog figure (num_undelivered_messages and
    # oldest_unacked_message_age are Cloud Monitoring metrics): lag knows neither
    lag_messages=False,
    lag_seconds=False,
)


class PubSubAdapter(Adapter):
    """Google Cloud Pub/Sub (or its emulator) through google-cloud-pubsub."""

    name = "pubsub"

    def __init__(self, settings: _settings.PubSubSettings) -> None:
        self.settings = settings
        self.capabilities = CAPABILITIES
        self.publish_timeout = settings.publish_timeout
        self.paths = Paths(settings.project)
        self._clients: Clients | None = None
        self._topology: Topology | None = None
        self._retry = retry_async.AsyncRetry(
            # rides out a short blip, within publish_timeout (the client's own retry
            # would go on for 60 s whatever the setting)
            predicate=_errors.is_transient,
            initial=0.1,
            maximum=2.0,
            timeout=settings.publish_timeout,
        )

    def __repr__(self) -> str:
        return f"<PubSubAdapter project={self.settings.project} {self.settings.endpoint_label()}>"

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> PubSubAdapter:
        return cls(_settings.parse(url, options))

    # -- connection -----------------------------------------------------------------

    @property
    def clients(self) -> Clients:
        """The open clients (PolybusError before :meth:`open` and after :meth:`close`)."""
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
        self._topology = Topology(clients, self.paths, self.settings)

    async def _probe(self, clients: Clients) -> None:
        """Return once Pub/Sub answers (any answer, even NotFound or PermissionDenied,
        proves it is reachable); BrokerUnavailable after ``connect_timeout``."""
        timeout = self.settings.connect_timeout
        deadline = time.monotonic() + timeout
        probe = self.paths.topic("polybus-connect-probe")
        rng = random.Random()
        attempt = 0
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
            attempt += 1
            wait = PROBE_BACKOFF.delay(attempt, rng)
            await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))
        raise BrokerUnavailable(
            f"Pub/Sub ({self.settings.endpoint_label()}) not reachable within {timeout:g} s"
        ) from last

    async def close(self) -> None:
        clients, self._clients = self._clients, None
        self._topology = None
        if clients is None:
            return
        await clients.close()

    # -- topology -------------------------------------------------------------------

    async def declare(self, topic: str, group: GroupSpec | None) -> None:
        """Create ``topic``, or the subscription of ``group`` (see :mod:`._topology`).
        A group that exists with the other ordering raises ConfigError("ordering")."""
        topology = self._topology
        if topology is None:
            raise PolybusError("the pubsub adapter is not open")
        if group is None:
            await topology.topic(topic)
        else:
            await topology.group(group)

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
        clients = self._clients
        if clients is None:
            raise PolybusError("the pubsub adapter is not open")
        path = self.paths.topic(topic)
        sent = 0
        try:
            # in order, one Publish RPC per chunk: the first failure stops the rest, so
            # a key's messages never reach Pub/Sub out of order
            for chunk in cut(
                messages, self.settings.batch_max_messages, MAX_REQUEST_BYTES, _request_size
            ):
                await clients.publisher.publish(
                    topic=path, messages=chunk, timeout=self.publish_timeout, retry=self._retry
                )
                sent += len(chunk)
        except Exception as exc:
            ids = [env.id for env in envelopes[sent:]]
            raise _errors.publish_error(exc, topic, ids) from exc

    # -- lag ------------------------------------------------------------------------

    async def delete_group(self, group: GroupSpec) -> None:
        """Delete the group's subscription (a temporary group's); gone already is fine."""
        path = self.paths.subscription(group.topic, group.group)
        try:
            await self.clients.subscriber.delete_subscription(
                subscription=path, timeout=ADMIN_TIMEOUT, retry=None
            )
        except gexc.NotFound:
            return
        except Exception as exc:
            raise _errors.admin_error(exc, f"deleting group {group.group!r}", "group") from exc

    async def lag(self, group: GroupSpec) -> Lag:
        """Lag(None, None) for a group that exists: the Pub/Sub API (and its emulator)
        reports no backlog; the figures are Cloud Monitoring metrics of the
        subscription (see README.md). ConfigError("group") for a group that does not
        exist (``GetSubscription``, which delivers nothing)."""
        path = self.paths.subscription(group.topic, group.group)
        action = f"reading group {group.group!r} of topic {group.topic!r}"
        try:
            have = await self.clients.subscriber.get_subscription(
                subscription=path, timeout=ADMIN_TIMEOUT, retry=None
            )
        except gexc.NotFound as exc:
            raise ConfigError(
                "group",
                f"pubsub: no group {group.group!r} on topic {group.topic!r} "
                f"(no subscription {path})",
            ) from exc
        except Exception as exc:
            raise _errors.admin_error(exc, action, "group") from exc
        if have.topic != self.paths.topic(group.topic):
            raise ConfigError(
                "group",
                f"pubsub: no group {group.group!r} on topic {group.topic!r} (subscription "
                f"{path} is of {have.topic or 'a deleted topic'})",
            )
        return Lag(None, None)

    # -- consuming ------------------------------------------------------------------

    def consumer(self, group: GroupSpec, *, max_in_flight: int) -> Consumer:
        return PubSubConsumer(
            self.clients.subscriber,
            self.paths.subscription(group.topic, group.group),
            group,
            self.settings,
        )


def _request_size(message: ps.PubsubMessage) -> int:
    return int(ps.PubsubMessage.pb(message).ByteSize())
