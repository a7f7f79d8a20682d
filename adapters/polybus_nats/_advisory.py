"""The MAX_DELIVERIES advisory: nothing vanishes when JetStream stops redelivering.

JetStream stops delivering a message to a consumer after ``max_deliver`` deliveries and
announces it on ``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>``; the
message stays in the stream but the group would never see it again. Polybus normally
dead-letters at the last delivery itself, so the advisory only fires when that delivery
was never settled (the consumer died). nats-server 2.9 emits it when the group next
pulls (a consumer waiting for messages keeps a pull request pending). Every live
consumer of the group hears it through one queue group, and one of them reads the
message from the stream and publishes the dead-letter copy. The copy keeps the
message id as ``Nats-Msg-Id``, so a copy published twice (by the consumer and by the
advisory) is stored once.

Advisories are not persisted: if no consumer of the group is running when it fires,
the message stays in the stream unread by the group, and polybus logs nothing (it
cannot know). ``README.md`` documents this window.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from polybus._deadletter import dead_letter_envelope
from polybus._message import Message

from . import _errors, _headers

if TYPE_CHECKING:
    from ._adapter import NatsAdapter
    from ._topology import GroupRef

log = logging.getLogger("polybus.nats")

SUBJECT = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"
QUEUE = "polybus-max-deliveries"


class AdvisoryHandler:
    """Listens for one group's MAX_DELIVERIES advisories while a consumer is open."""

    def __init__(self, adapter: NatsAdapter, ref: GroupRef) -> None:
        self.adapter = adapter
        self.ref = ref
        self._sub: Subscription | None = None

    async def start(self) -> None:
        subject = SUBJECT.format(stream=self.ref.topic.stream, consumer=self.ref.consumer)
        self._sub = await self.adapter.nc.subscribe(subject, queue=QUEUE, cb=self._on_advisory)

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection is closing anyway
                log.debug("advisory unsubscribe failed: %s", _errors.describe(exc))

    async def _on_advisory(self, advisory: Msg) -> None:
        try:
            event = json.loads(advisory.data)
            seq = int(event["stream_seq"])
            deliveries = int(event.get("deliveries", 0))
        except (ValueError, KeyError, TypeError):
            log.error("unreadable MAX_DELIVERIES advisory for %s", self.ref.group)
            return
        topic, group = self.ref.topic.topic, self.ref.group
        try:
            stored = await self.adapter.js.get_msg(self.ref.topic.stream, seq)
            fields = _headers.decode(stored.headers)
            message = Message(
                id=fields.id or f"{self.ref.topic.stream}:{seq}",
                topic=topic,
                body=stored.data or b"",
                group=group,
                key=fields.key,
                headers=fields.headers,
                content_type=fields.content_type,
                published_at=fields.published_at,
                delivery_attempt=deliveries,
            )
            copy = dead_letter_envelope(
                message, f"delivery limit reached: JetStream gave up after {deliveries} deliveries"
            )
            dlq = self.adapter.dead_letter_topic(topic, group)
            await self.adapter.ensure_topic(dlq)
            await self.adapter.publish(dlq, [copy])
        except Exception as exc:  # logged loudly: the message needs a human
            log.error(
                "message at stream sequence %d of topic=%s reached the delivery limit of "
                "group=%s and could not be dead-lettered: %s",
                seq,
                topic,
                group,
                _errors.describe(exc),
            )
            return
        log.warning(
            "dead-lettered topic=%s group=%s id=%s reason=JetStream max_deliver",
            topic,
            group,
            message.id,
        )
