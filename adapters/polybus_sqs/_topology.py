"""Topics and groups on SNS and SQS.

* A topic is an SNS topic (FIFO when ``fifo=true``). A group is an SQS queue
  subscribed to it with raw message delivery, plus the queue policy that lets that
  topic send to it. With ``sns=false`` a topic is one SQS queue and exactly one group
  may read it (recorded in the queue tag ``polybus-group``).
* The group's ordering is stored in the queue tag ``polybus-ordering`` when the group
  is first declared; declaring it again with the other ordering is a ConfigError.

Every declaration makes its calls again (all idempotent), so a group whose queue was
lost is made again when the core declares it after an outage. Only the ARNs and URLs
the publisher and consumers need are remembered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from polybus.errors import ConfigError, PolybusError
from polybus.spi import Ordering

from . import _names
from ._client import Clients
from ._errors import is_gone
from ._settings import SQSSettings

TAG_GROUP = "polybus-group"
TAG_ORDERING = "polybus-ordering"
BACKLOG_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)
"""Visible (waiting), in flight (received and not deleted, or nacked with a delay) and
delayed messages of a queue: together every message the group has not deleted."""


@dataclass(frozen=True, slots=True)
class Queue:
    name: str
    url: str
    arn: str


class Topology:
    """Declares the AWS resources of one adapter and remembers their addresses."""

    def __init__(self, clients: Clients, settings: SQSSettings) -> None:
        self.clients = clients
        self.settings = settings
        self._topic_arns: dict[str, str] = {}
        self._queues: dict[str, Queue] = {}

    # -- names ----------------------------------------------------------------------

    def queue_name(self, topic: str, group: str) -> str:
        s = self.settings
        if not s.sns:
            return _names.topic_queue_name(s.prefix, topic, fifo=s.fifo)
        return _names.group_queue_name(s.prefix, topic, group, fifo=s.fifo)

    def known_queue(self, topic: str, group: str) -> Queue | None:
        """The group's queue if this adapter declared it."""
        return self._queues.get(self.queue_name(topic, group))

    # -- topics ---------------------------------------------------------------------

    async def declare_topic(self, topic: str) -> None:
        s = self.settings
        if s.sns:
            await self._create_topic(topic)
        else:
            await self._queue(_names.topic_queue_name(s.prefix, topic, fifo=s.fifo), fresh=True)

    async def topic_arn(self, topic: str) -> str:
        """The SNS topic's ARN (the topic is made if this adapter has not seen it)."""
        arn = self._topic_arns.get(topic)
        return arn if arn is not None else await self._create_topic(topic)

    async def topic_queue(self, topic: str) -> Queue:
        """With ``sns=false``: the queue that is ``topic``."""
        s = self.settings
        return await self._queue(_names.topic_queue_name(s.prefix, topic, fifo=s.fifo))

    async def _create_topic(self, topic: str) -> str:
        s = self.settings
        name = _names.topic_name(s.prefix, topic, fifo=s.fifo)
        attrs = {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if s.fifo else {}
        out = await self.clients.sns(
            "create_topic", f"create SNS topic {name!r}", Name=name, Attributes=attrs
        )
        arn = self._topic_arns[topic] = str(out["TopicArn"])
        return arn

    # -- groups ---------------------------------------------------------------------

    async def declare_group(self, topic: str, group: str, ordering: Ordering) -> Queue:
        """The group's queue, made and subscribed (or claimed) if missing, its ordering
        recorded or checked."""
        if not self.settings.sns:
            queue = await self._queue(self.queue_name(topic, group), fresh=True)
        else:
            topic_arn = await self._create_topic(topic)
            queue = await self._queue(self.queue_name(topic, group), fresh=True)
            await self._subscribe(topic, topic_arn, queue)
        await self._check_tags(queue, topic, group, ordering)
        return queue

    async def _subscribe(self, topic: str, topic_arn: str, queue: Queue) -> None:
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "polybus-sns-to-sqs",
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue.arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }
            ],
        }
        await self.clients.sqs(
            "set_queue_attributes",
            f"allow SNS topic {topic!r} to send to queue {queue.name!r}",
            QueueUrl=queue.url,
            Attributes={"Policy": json.dumps(policy)},
        )
        # subscribing the same endpoint again returns the same subscription
        await self.clients.sns(
            "subscribe",
            f"subscribe queue {queue.name!r} to SNS topic {topic!r}",
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=queue.arn,
            Attributes={"RawMessageDelivery": "true"},
            ReturnSubscriptionArn=True,
        )

    async def _check_tags(self, queue: Queue, topic: str, group: str, ordering: Ordering) -> None:
        """Record the owner (``sns=false``) and the ordering on a queue that has none;
        refuse a queue recorded with others. Read again after tagging: a declaration
        racing with another ordering usually fails (SQS has no conditional tag)."""
        wanted = {TAG_ORDERING: ordering.value}
        if not self.settings.sns:
            wanted[TAG_GROUP] = group
        tags = await self.tags(queue)
        self._refuse_conflicts(tags, wanted, queue, topic, group)
        missing = {k: v for k, v in wanted.items() if k not in tags}
        if missing:
            await self.clients.sqs(
                "tag_queue", f"tag queue {queue.name!r}", QueueUrl=queue.url, Tags=missing
            )
            self._refuse_conflicts(await self.tags(queue), wanted, queue, topic, group)

    @staticmethod
    def _refuse_conflicts(
        tags: dict[str, str], wanted: dict[str, str], queue: Queue, topic: str, group: str
    ) -> None:
        owner = tags.get(TAG_GROUP)
        if TAG_GROUP in wanted and owner is not None and owner != group:
            raise ConfigError(
                "group",
                f"sqs: topic {topic!r} has no fan-out with sns=false: its queue belongs to "
                f"group {owner!r}, so group {group!r} cannot subscribe (use sns=true)",
            )
        have = tags.get(TAG_ORDERING)
        if have is not None and have != wanted[TAG_ORDERING]:
            raise ConfigError(
                "ordering",
                f"sqs: group {group!r} of topic {topic!r} exists with ordering={have!r}, not "
                f"{wanted[TAG_ORDERING]!r} (tag {TAG_ORDERING} of queue {queue.name!r}); the "
                "ordering of a group is fixed when it is created: use a new group name for "
                "the other ordering (and drain the old group before deleting its queue)",
            )

    async def tags(self, queue: Queue) -> dict[str, str]:
        out = await self.clients.sqs(
            "list_queue_tags", f"read the tags of queue {queue.name!r}", QueueUrl=queue.url
        )
        return dict(out.get("Tags") or {})

    # -- lag ------------------------------------------------------------------------

    async def backlog(self, topic: str, group: str) -> int:
        """The messages in the group's queue not deleted yet: the sum of SQS's
        approximate visible, not-visible and delayed counts (``GetQueueAttributes``,
        which receives nothing). ConfigError("group") if the group has no queue."""
        name = self.queue_name(topic, group)
        missing = ConfigError(
            "group", f"sqs: no group {group!r} on topic {topic!r} (no queue {name!r})"
        )
        try:
            found = await self.clients.sqs("get_queue_url", f"find queue {name!r}", QueueName=name)
            url = str(found["QueueUrl"])
            if not self.settings.sns:
                owner = (await self.tags(Queue(name, url, ""))).get(TAG_GROUP)
                if owner is not None and owner != group:
                    raise ConfigError(
                        "group",
                        f"sqs: no group {group!r} on topic {topic!r} (with sns=false its "
                        f"queue {name!r} belongs to group {owner!r})",
                    )
            got = await self.clients.sqs(
                "get_queue_attributes",
                f"read the message counts of queue {name!r}",
                QueueUrl=url,
                AttributeNames=list(BACKLOG_ATTRIBUTES),
            )
        except ConfigError:
            raise
        except PolybusError as exc:
            if is_gone(exc):
                raise missing from exc
            raise
        attributes = got.get("Attributes") or {}
        return sum(int(attributes.get(a, 0)) for a in BACKLOG_ATTRIBUTES)

    async def delete_group(self, topic: str, group: str) -> None:
        """Unsubscribe the group's queue from its SNS topic and delete it (idempotent).
        With sns=false a topic's queue is the topic itself: refused."""
        if not self.settings.sns:
            raise ConfigError(
                "group", "sqs: with sns=false a group's queue is its topic's; it is not deleted"
            )
        name = self.queue_name(topic, group)
        try:
            found = await self.clients.sqs("get_queue_url", f"find queue {name!r}", QueueName=name)
        except PolybusError as exc:
            if is_gone(exc):
                return
            raise
        url = str(found["QueueUrl"])
        got = await self.clients.sqs(
            "get_queue_attributes",
            f"read the ARN of queue {name!r}",
            QueueUrl=url,
            AttributeNames=["QueueArn"],
        )
        queue_arn = str(got["Attributes"]["QueueArn"])
        topic_arn = await self.topic_arn(topic)
        listed = await self.clients.sns(
            "list_subscriptions_by_topic",
            f"list the subscriptions of {topic!r}",
            TopicArn=topic_arn,
        )
        for sub in listed.get("Subscriptions") or ():
            if sub.get("Endpoint") == queue_arn:
                await self.clients.sns(
                    "unsubscribe",
                    f"unsubscribe queue {name!r}",
                    SubscriptionArn=sub["SubscriptionArn"],
                )
        await self.clients.sqs("delete_queue", f"delete queue {name!r}", QueueUrl=url)
        self._queues.pop(name, None)

    # -- queues ---------------------------------------------------------------------

    async def _queue(self, name: str, *, fresh: bool = False) -> Queue:
        """The queue called ``name``, made if missing (``fresh``: even if remembered)."""
        queue = self._queues.get(name)
        if queue is not None and not fresh:
            return queue
        s = self.settings
        attrs = {"VisibilityTimeout": str(s.visibility_timeout)}
        if s.fifo:
            attrs["FifoQueue"] = "true"
        try:
            out = await self.clients.sqs(
                "create_queue", f"create SQS queue {name!r}", QueueName=name, Attributes=attrs
            )
        except ConfigError as exc:
            raise await self._conflict(name, exc) from exc
        url = str(out["QueueUrl"])
        if queue is None or queue.url != url:
            got = await self.clients.sqs(
                "get_queue_attributes",
                f"read the ARN of queue {name!r}",
                QueueUrl=url,
                AttributeNames=["QueueArn"],
            )
            queue = self._queues[name] = Queue(name, url, str(got["Attributes"]["QueueArn"]))
        return queue

    async def _conflict(self, name: str, exc: ConfigError) -> ConfigError:
        """Name the setting that differs from the existing queue's attribute."""
        try:
            found = await self.clients.sqs("get_queue_url", "find queue", QueueName=name)
            got = await self.clients.sqs(
                "get_queue_attributes",
                "read queue",
                QueueUrl=found["QueueUrl"],
                AttributeNames=["VisibilityTimeout"],
            )
        except Exception:
            return exc
        have = got["Attributes"].get("VisibilityTimeout")
        if have is not None and have != str(self.settings.visibility_timeout):
            return ConfigError(
                "visibility_timeout",
                f"sqs: queue {name!r} exists with VisibilityTimeout={have}, this adapter is "
                f"configured with {self.settings.visibility_timeout} (use the queue's value, "
                "or change the queue's attribute)",
            )
        return exc
