"""Declaring topics and groups once per bus: the dead-letter topic of every group, the
group's ordering, and re-declaration after an outage."""

from __future__ import annotations

from .capabilities import Ordering
from .errors import ConfigError
from .spi import DLQ_GROUP, Adapter, GroupSpec

__all__ = ["DEFAULT_DEAD_LETTER_TOPIC", "Topology", "check_template"]

DEFAULT_DEAD_LETTER_TOPIC = "{topic}.{group}.dlq"


def check_template(template: object) -> str:
    """``template`` if it is a usable dead-letter topic template, else ConfigError."""
    if not isinstance(template, str) or "{topic}" not in template or "{group}" not in template:
        raise ConfigError(
            "dead_letter_topic",
            f"must be a string containing {{topic}} and {{group}}, got {template!r}",
        )
    try:
        template.format(topic="t", group="g")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError("dead_letter_topic", f"invalid template {template!r}: {exc}") from exc
    return template


def check_name(field: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(field, f"must be a non-empty string, got {value!r}")
    return value


class Topology:
    """What one bus has declared. Every group gets its dead-letter topic (named by the
    template) with a ``polybus-dlq`` group, so dead letters are kept until read."""

    def __init__(self, adapter: Adapter, template: str = DEFAULT_DEAD_LETTER_TOPIC) -> None:
        self.adapter = adapter
        self.template = check_template(template)
        self.known: set[str] = set()
        """The topics this bus declared (and checked)."""
        self._groups: dict[tuple[str, str], Ordering] = {}

    def spec(self, topic: str, group: str, ordering: Ordering = Ordering.NONE) -> GroupSpec:
        """The group as the adapter sees it; ConfigError if the backend refuses it."""
        check_name("topic", topic)
        check_name("group", group)
        dlq = None if group == DLQ_GROUP else self.dead_letter_topic(topic, group)
        spec = GroupSpec(topic, group, ordering, dlq)
        refuse(self.adapter, spec)
        return spec

    def dead_letter_topic(self, topic: str, group: str) -> str:
        return self.template.format(topic=topic, group=group)

    async def topic(self, topic: str, *, again: bool = False) -> None:
        if again or topic not in self.known:
            await self.adapter.declare(topic, None)
            self.known.add(topic)

    async def group(self, spec: GroupSpec, *, again: bool = False) -> None:
        """Declare the group (and its dead-letter topic and group) unless this bus did
        already; ``again`` declares everything anew (after an outage, a broker that lost
        its state gets it back)."""
        known = self._groups.get((spec.topic, spec.group))
        if known is not None and known is not spec.ordering:
            raise ConfigError(
                "ordering",
                f"group {spec.group!r} of topic {spec.topic!r} is already open on this bus "
                f"with ordering={known.value!r}, not {spec.ordering.value!r}",
            )
        if known is not None and not again:
            return
        await self.topic(spec.topic, again=again)
        await self.adapter.declare(spec.topic, spec)
        if spec.dead_letter_topic is not None:
            await self.group(GroupSpec(spec.dead_letter_topic, DLQ_GROUP), again=again)
        self._groups[(spec.topic, spec.group)] = spec.ordering


def refuse(adapter: Adapter, spec: GroupSpec) -> None:
    """Raise ConfigError, naming the backend, for an ordering it cannot give."""
    caps = adapter.capabilities
    if spec.ordering is Ordering.KEY and not caps.key_order:
        reason = getattr(adapter, "key_order_refusal", None) or "it cannot keep per-key order"
        raise ConfigError(
            "ordering",
            f"the {adapter.name} backend refuses ordering='key' for group {spec.group!r}: {reason}",
        )
