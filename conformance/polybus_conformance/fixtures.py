"""What conformance tests get from the plugin: the target broker, fresh buses and
unique names."""

from __future__ import annotations

import itertools
import re
import uuid
from dataclasses import dataclass
from typing import Any

import polybus
from polybus import Bus, Capabilities

from .provisioning import Broker
from .timing import Profile


@dataclass(frozen=True, slots=True)
class Target:
    """The backend under test and the broker that serves it."""

    backend: str
    broker: Broker
    capabilities: Capabilities
    profile: Profile

    @property
    def url(self) -> str:
        return self.broker.url

    @property
    def flavour(self) -> str:
        return self.broker.flavour

    def connect(self, url: str | None = None, **options: Any) -> Bus:
        """A new, not yet opened :class:`~polybus.Bus` to the broker (or ``url``)."""
        return polybus.connect(url or self.broker.url, **options)


class BusFactory:
    """Opens fresh :class:`~polybus.Bus` instances; closes them all at teardown.

    Each call is a new client connection, so a test can prove that what one client
    published or acknowledged is seen by another.
    """

    def __init__(self, target: Target, *, isolated: bool = False) -> None:
        self.target = target
        self.url = target.url
        if isolated:  # an in-process broker of this factory's own (memory://NAME)
            base, sep, query = target.url.partition("?")
            self.url = f"{base.rstrip('/')}-{uuid.uuid4().hex[:8]}{sep}{query}"
        self._buses: list[Bus] = []

    async def __call__(self, **options: Any) -> Bus:
        bus = self.target.connect(self.url, **options)
        await bus.open()
        self._buses.append(bus)
        return bus

    async def close_all(self) -> None:
        buses, self._buses = self._buses, []
        errors: list[BaseException] = []
        for bus in reversed(buses):
            try:
                await bus.close()
            except Exception as exc:  # close every bus, then report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]


class Names:
    """Unique topic and group names for one test: ``pb-<test>-<label>-<token>``.

    Only lower-case letters, digits and hyphens, and short, so every broker accepts
    them (SQS queue names, Pub/Sub ids, NATS stream names) with room for suffixes
    such as the dead-letter topic's.
    """

    def __init__(self, test_name: str) -> None:
        slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower().removeprefix("test_")).strip("-")
        self.base = slug[:14].strip("-") or "t"
        self.token = uuid.uuid4().hex[:6]
        self._count = itertools.count(1)

    def topic(self, label: str = "t") -> str:
        return f"pb-{self.base}-{label}{next(self._count)}-{self.token}"

    def group(self, label: str = "g") -> str:
        return f"{label}{next(self._count)}-{self.token}"
