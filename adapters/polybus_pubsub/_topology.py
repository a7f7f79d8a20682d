"""Topics and subscriptions: creating them idempotently, reconciling existing ones.

A polybus topic is a Pub/Sub topic; a group is a subscription of it, with message
ordering exactly when the group is key-ordered, and a dead-letter policy of 100
attempts (Pub/Sub's maximum) so that Pub/Sub counts deliveries (``delivery_attempt``
is only filled where a policy exists) and, as a backstop, moves a message that was
delivered 100 times. A group's policy points at its polybus dead-letter topic; a
dead-letter group's own policy points at a ``%parked`` topic whose one subscription
keeps what is moved there.

Admin calls run without the client's built-in retry: a failure surfaces at once as
BrokerUnavailable and the core retries with backoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from google.api_core import exceptions as gexc
from google.protobuf import field_mask_pb2
from google.pubsub_v1 import types as ps

from polybus.errors import ConfigError
from polybus.spi import DLQ_GROUP, GroupSpec

from . import _errors
from ._clients import Clients
from ._names import parked_id, subscription_id, topic_id
from ._settings import PubSubSettings

log = logging.getLogger("polybus.pubsub")

MAX_DELIVERY_ATTEMPTS = 100
"""The most a dead-letter policy allows: the backstop behind polybus's own limit."""
ADMIN_TIMEOUT = 30.0
_MUTABLE = ("ack_deadline_seconds", "enable_exactly_once_delivery", "dead_letter_policy")


@dataclass(frozen=True, slots=True)
class Paths:
    """Full resource names of one project."""

    project: str

    def topic(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic_id(topic)}"

    def subscription(self, topic: str, group: str) -> str:
        return f"projects/{self.project}/subscriptions/{subscription_id(topic, group)}"

    def parked_topic(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{parked_id(topic)}"

    def parked_subscription(self, topic: str) -> str:
        return f"projects/{self.project}/subscriptions/{parked_id(topic)}"


def _ordering(enabled: bool) -> str:
    return "'key'" if enabled else "'none'"


class Topology:
    """Declares topics and groups of one project through ``clients``."""

    def __init__(self, clients: Clients, paths: Paths, settings: PubSubSettings) -> None:
        self.clients = clients
        self.paths = paths
        self.settings = settings

    async def topic(self, topic: str) -> None:
        """Create polybus topic ``topic`` unless it exists."""
        await self._create_topic(self.paths.topic(topic), f"creating topic {topic!r}")

    async def group(self, spec: GroupSpec) -> None:
        """Create or reconcile the subscription of ``spec`` (its topic exists), with its
        dead-letter topic (or, for a dead-letter group, its parked topic)."""
        paths = self.paths
        if spec.dead_letter_topic is not None:
            dead = paths.topic(spec.dead_letter_topic)
            await self._create_topic(dead, f"creating topic {spec.dead_letter_topic!r}")
        else:
            dead = paths.parked_topic(spec.topic)
            await self._create_topic(dead, f"creating the parked topic of {spec.topic!r}")
            parked = self._wanted(paths.parked_subscription(spec.topic), dead, ordered=False)
            await self._subscription(parked, spec.topic, "the parked dead letters")
        wanted = self._wanted(
            paths.subscription(spec.topic, spec.group),
            paths.topic(spec.topic),
            ordered=spec.key_ordered,
        )
        wanted.dead_letter_policy = ps.DeadLetterPolicy(
            dead_letter_topic=dead, max_delivery_attempts=MAX_DELIVERY_ATTEMPTS
        )
        # a dead-letter group made by an earlier version has message ordering: reading
        # it unordered is harmless, and its ordering is polybus's choice, not the user's
        lenient = spec.dead_letter_topic is None and spec.group == DLQ_GROUP
        await self._subscription(wanted, spec.topic, f"group {spec.group!r}", lenient=lenient)

    def _wanted(self, name: str, topic: str, *, ordered: bool) -> ps.Subscription:
        s = self.settings
        return ps.Subscription(
            name=name,
            topic=topic,
            ack_deadline_seconds=s.ack_deadline,
            enable_message_ordering=ordered,
            enable_exactly_once_delivery=s.exactly_once,
            # never expire an idle group: it must keep receiving while no one reads it
            expiration_policy=ps.ExpirationPolicy(),
        )

    async def _create_topic(self, path: str, action: str) -> None:
        try:
            await self.clients.publisher.create_topic(name=path, timeout=ADMIN_TIMEOUT, retry=None)
            log.info("created topic %s", path)
        except gexc.AlreadyExists:
            pass
        except Exception as exc:
            raise _errors.admin_error(exc, action, "topic") from exc

    async def _subscription(
        self, wanted: ps.Subscription, topic: str, what: str, *, lenient: bool = False
    ) -> None:
        subscriber = self.clients.subscriber
        action = f"creating {what} on topic {topic!r}"
        try:
            await subscriber.create_subscription(request=wanted, timeout=ADMIN_TIMEOUT, retry=None)
            log.info("created subscription %s", wanted.name)
            return
        except gexc.AlreadyExists:
            pass
        except Exception as exc:
            raise _errors.admin_error(exc, action, "group") from exc
        try:
            have = await subscriber.get_subscription(
                subscription=wanted.name, timeout=ADMIN_TIMEOUT, retry=None
            )
        except Exception as exc:
            raise _errors.admin_error(exc, action, "group") from exc
        await self._reconcile(have, wanted, topic, what, lenient)

    async def _reconcile(
        self, have: ps.Subscription, wanted: ps.Subscription, topic: str, what: str, lenient: bool
    ) -> None:
        """Mutable differences are updated (the latest declaration wins); immutable ones
        (the topic, message ordering unless ``lenient``) are a conflict the user resolves."""
        if have.topic != wanted.topic:
            raise ConfigError(
                "group",
                f"pubsub: subscription {have.name} for {what} exists on another topic "
                f"({have.topic}), not {wanted.topic}",
            )
        if have.enable_message_ordering != wanted.enable_message_ordering and not lenient:
            raise ConfigError(
                "ordering",
                f"pubsub: {what} of topic {topic!r} exists with "
                f"ordering={_ordering(have.enable_message_ordering)}, not "
                f"{_ordering(wanted.enable_message_ordering)}; Pub/Sub cannot change a "
                f"subscription's message ordering. Keep ordering="
                f"{_ordering(have.enable_message_ordering)}, or move to a new group name "
                f"(drain the old group, then delete its subscription {have.name})",
            )
        paths = [p for p in _MUTABLE if getattr(have, p) != getattr(wanted, p)]
        if not paths:
            return
        try:
            await self.clients.subscriber.update_subscription(
                subscription=wanted,
                update_mask=field_mask_pb2.FieldMask(paths=paths),
                timeout=ADMIN_TIMEOUT,
                retry=None,
            )
        except Exception as exc:
            raise _errors.admin_error(exc, f"updating {what} on topic {topic!r}", "group") from exc
        log.info("updated subscription %s: %s", wanted.name, ", ".join(paths))
