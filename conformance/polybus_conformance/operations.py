"""The operations tier's brokers: reached through a fault proxy, and the fixtures that
hand them to tests (registered as a plugin by :mod:`polybus_conformance.plugin`).

A network-fault test gets ``polybus_proxied`` / ``polybus_proxied_bus_factory``: every client
connection goes through a :class:`~polybus_conformance.netfault.FaultProxy` that the
test can cut or stall. One proxy per backend is started on first use, in front of the
session's broker; Kafka gets a tansu of its own that advertises the proxy's address
(Kafka clients connect to the address the broker advertises, so a proxy in front of the
shared broker would be bypassed). Each test leaves the proxy restored.
"""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_asyncio

from .fixtures import BusFactory, Target
from .netfault import FaultProxy
from .provisioning import Broker, Unavailable
from .provisioning.base import free_port
from .provisioning.tansu import TansuLauncher

_HOST_PORT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}|localhost):(\d+)")


@dataclass
class Proxied:
    """A backend reached through a fault proxy."""

    target: Target
    """The target whose URL goes through the proxy."""
    proxy: FaultProxy
    broker: Broker
    own_broker: bool


def through(url: str, port: int) -> tuple[str, tuple[str, int]]:
    """``url`` with its first ``host:port`` replaced by ``127.0.0.1:port``, and that
    original address."""
    found = _HOST_PORT.search(url)
    if found is None:
        raise Unavailable(f"no host:port in the broker URL to put a proxy in front of: {url}")
    upstream = (found.group(1), int(found.group(2)))
    return url[: found.start()] + f"127.0.0.1:{port}" + url[found.end() :], upstream


class _Proxies:
    def __init__(self, workdir: Path, shared: Callable[[str], Target]) -> None:
        self.workdir = workdir
        self.shared = shared
        self.found: dict[str, Proxied | Unavailable] = {}

    def get(self, backend: str) -> Proxied:
        found = self.found.get(backend)
        if found is None:
            try:
                found = self._start(backend)
            except Unavailable as exc:
                found = exc
            self.found[backend] = found
        if isinstance(found, Unavailable):
            raise found
        return found

    def _start(self, backend: str) -> Proxied:
        base = self.shared(backend)
        if backend == "kafka":
            port = free_port()
            directory = self.workdir / "kafka-proxied"
            directory.mkdir(parents=True, exist_ok=True)
            launcher = TansuLauncher()
            if launcher.find() is None:
                raise Unavailable(f"no tansu for the proxied Kafka broker: {launcher.program}")
            broker = launcher.start(directory, advertised_port=port)
            assert broker.listen_port is not None
            proxy = FaultProxy("127.0.0.1", broker.listen_port, port=port).start()
            target = replace(base, broker=broker)
            return Proxied(target, proxy, broker, own_broker=True)
        proxy_port = free_port()
        url, upstream = through(base.url, proxy_port)
        proxy = FaultProxy(*upstream, port=proxy_port).start()
        broker = replace(base.broker, url=url)
        return Proxied(replace(base, broker=broker), proxy, base.broker, own_broker=False)

    def stop_all(self) -> list[str]:
        problems = []
        for backend, found in self.found.items():
            if isinstance(found, Proxied):
                try:
                    found.proxy.stop()
                    if found.own_broker:
                        found.broker.stop()
                except Exception as exc:
                    problems.append(f"{backend} (proxied): {exc}")
        self.found.clear()
        return problems


_PROXIES = pytest.StashKey[_Proxies]()


def configure(config: pytest.Config, workdir: Path, shared: Callable[[str], Target]) -> None:
    config.stash[_PROXIES] = _Proxies(workdir, shared)
    config.pluginmanager.register(sys.modules[__name__], "polybus-operations")


def stop_all(config: pytest.Config) -> list[str]:
    proxies = config.stash.get(_PROXIES, None)
    return [] if proxies is None else proxies.stop_all()


@pytest.fixture
def polybus_proxied(polybus_backend: str, request: pytest.FixtureRequest) -> Iterator[Proxied]:
    """The backend behind a fault proxy; the proxy is restored after the test."""
    try:
        found = request.config.stash[_PROXIES].get(polybus_backend)
    except Unavailable as exc:
        pytest.skip(str(exc).splitlines()[0])
    try:
        yield found
    finally:
        found.proxy.restore()


@pytest_asyncio.fixture
async def polybus_proxied_bus_factory(polybus_proxied: Proxied) -> AsyncIterator[BusFactory]:
    """Opens buses whose every connection goes through the fault proxy."""
    factory = BusFactory(polybus_proxied.target)
    try:
        yield factory
    finally:
        await factory.close_all()
