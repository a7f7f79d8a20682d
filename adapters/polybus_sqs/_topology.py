"""Topics, groups and dead-letter routing on SNS and SQS.

* A topic is an SNS topic (FIFO when ``fifo=true``). A group is an SQS queue
  subscribed to it with raw message delivery, plus the queue policy that lets that
  topic send to it. With ``sns=false`` a topic is one SQS queue and exactly one group
  may read it (recorded in the queue tag ``polybus-group``).
* A group with a delivery limit gets the SQS redrive policy ``maxReceiveCount`` =
  limit, whose target is the queue of its dead-letter topic's ``polybus-dlq`` group:
  the same queue that polybus's explicit dead letters reach through the dead-letter
  topic, so one reader sees both kinds. That queue is tagged with the original topic
  and group, so a consumer can label natively moved messages.

Every ensure is idempotent and cached per adapter; a queue that exists with other
attributes raises :class:`~polybus.errors.ConfigError` naming the setting.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from polybus._deadletter import DLQ_GROUP
from polybus.errors import ConfigError

from . import _names
from ._client import Clients
from ._settings import SQSSettings

TAG_GROUP = "polybus-group"
TAG_ORIGIN_TOPIC = "polybus-dlq-original-topic"
TAG_ORIGIN_GROUP = "polybus-dlq-original-group"
TAG_LIMIT = "polybus-dlq-max-deliveries"


@dataclass(frozen=True, slots=True)
class Queue:
    name: str
    url: str
    arn: str


class Topology:
    """Declares and remembers the AWS resources of one adapter."""

    def __init__(
        self, clients: Clients, settings: SQSSettings, dlq_topic: Callable[[str, str], str]
    ) -> None:
        self.clients = clients
        self.settings = settings
        self.dlq_topic = dlq_topic
        self._topic_arns: dict[str, str] = {}
        self._queues: dict[str, Queue] = {}
        self._groups: dict[tuple[str, str], Queue] = {}
        self._redrive: dict[str, int] = {}

    # -- names --------------------------------------------------------------------

    def queue_name(self, topic: str, group: str) -> str:
        s = self.settings
        if not s.sns:
            return _names.topic_queue_name(s.prefix, topic, fifo=s.fifo)
        return _names.group_queue_name(s.prefix, topic, group, fifo=s.fifo)

    # -- topics -------------------------------------------------------------------

    async def ensure_topic(self, topic: str) -> None:
        if self.settings.sns:
            await self.topic_arn(topic)
        else:
            await self._queue(
                _names.topic_queue_name(self.settings.prefix, topic, fifo=self.settings.fifo)
            )

    async def topic_arn(self, topic: str) -> str:
        """The SNS topic's ARN, creating the topic if missing."""
        arn = self._topic_arns.get(topic)
        if arn is None:
            s = self.settings
            name = _names.topic_name(s.prefix, topic, fifo=s.fifo)
            attrs = {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if s.fifo else {}
            out = await self.clients.sns(
                "create_topic", f"create SNS topic {name!r}", Name=name, Attributes=attrs
            )
            arn = self._topic_arns[topic] = str(out["TopicArn"])
        return arn

    async def topic_queue(self, topic: str) -> Queue:
        """With ``sns=false``: the queue that is ``topic``."""
        s = self.settings
        return await self._queue(_names.topic_queue_name(s.prefix, topic, fifo=s.fifo))

    # -- groups -------------------------------------------------------------------

    async def ensure_group(self, topic: str, group: str, max_deliveries: int | None) -> Queue:
        """The group's queue, created and subscribed (or claimed) if missing; with a
        delivery limit, its redrive policy set to the dead-letter queue."""
        queue = self._groups.get((topic, group))
        if queue is None:
            queue = await self._declare_group(topic, group)
            self._groups[(topic, group)] = queue
        if max_deliveries is not None and self._redrive.get(queue.url) != max_deliveries:
            await self._set_redrive(topic, group, queue, max_deliveries)
            self._redrive[queue.url] = max_deliveries
        return queue

    async def group_queue(self, topic: str, group: str) -> Queue:
        """The group's queue (declared by :meth:`ensure_group` before consumers open)."""
        queue = self._groups.get((topic, group))
        return queue if queue is not None else await self._queue(self.queue_name(topic, group))

    async def _declare_group(self, topic: str, group: str) -> Queue:
        if not self.settings.sns:
            queue = await self.topic_queue(topic)
            await self._claim(queue, topic, group)
            return queue
        topic_arn = await self.topic_arn(topic)
        queue = await self._queue(self.queue_name(topic, group))
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
        return queue

    async def _claim(self, queue: Queue, topic: str, group: str) -> None:
        """``sns=false``: a topic's queue serves one group; a second one is refused
        (it would compete for messages instead of receiving them all)."""
        tags = await self.tags(queue)
        owner = tags.get(TAG_GROUP)
        if owner is not None and owner != group:
            raise ConfigError(
                "group",
                f"topic {topic!r} has no fan-out with sns=false: its queue belongs to group "
                f"{owner!r}, so group {group!r} cannot subscribe (use sns=true)",
            )
        if owner is None:
            await self.clients.sqs(
                "tag_queue",
                f"tag queue {queue.name!r}",
                QueueUrl=queue.url,
                Tags={TAG_GROUP: group},
            )

    async def _set_redrive(self, topic: str, group: str, queue: Queue, limit: int) -> None:
        dlq_topic = self.dlq_topic(topic, group)
        await self.ensure_topic(dlq_topic)
        dlq = await self.ensure_group(dlq_topic, DLQ_GROUP, None)
        await self.clients.sqs(
            "tag_queue",
            f"tag dead-letter queue {dlq.name!r}",
            QueueUrl=dlq.url,
            Tags={TAG_ORIGIN_TOPIC: topic, TAG_ORIGIN_GROUP: group, TAG_LIMIT: str(limit)},
        )
        policy = {"deadLetterTargetArn": dlq.arn, "maxReceiveCount": limit}
        await self.clients.sqs(
            "set_queue_attributes",
            f"set the redrive policy of queue {queue.name!r}",
            QueueUrl=queue.url,
            Attributes={"RedrivePolicy": json.dumps(policy)},
        )

    async def tags(self, queue: Queue) -> dict[str, str]:
        out = await self.clients.sqs(
            "list_queue_tags", f"read the tags of queue {queue.name!r}", QueueUrl=queue.url
        )
        return dict(out.get("Tags") or {})

    # -- queues -------------------------------------------------------------------

    async def _queue(self, name: str) -> Queue:
        queue = self._queues.get(name)
        if queue is not None:
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
            url = (await self.clients.sqs("get_queue_url", "find queue", QueueName=name))[
                "QueueUrl"
            ]
            got = await self.clients.sqs(
                "get_queue_attributes",
                "read queue",
                QueueUrl=url,
                AttributeNames=["VisibilityTimeout"],
            )
        except Exception:
            return exc
        have = got["Attributes"].get("VisibilityTimeout")
        if have is not None and have != str(self.settings.visibility_timeout):
            return ConfigError(
                "visibility_timeout",
                f"queue {name!r} exists with VisibilityTimeout={have}, "
                f"this adapter is configured with {self.settings.visibility_timeout}",
            )
        return exc
