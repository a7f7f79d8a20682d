"""The fault tier's brokers: private, local, restartable; and the fixtures that hand
them to tests (registered as a plugin by :mod:`polybus_conformance.plugin`).

A fault test gets ``polybus_restartable_target`` / ``polybus_restartable_bus_factory``
instead of the broker the other tiers share: ``target.broker.restart()`` stops that
broker and starts it again on the same port and data directory. One broker per backend
is started on
first use and stopped at the end of the session. It cannot be provided for a broker
the user gave by URL (the suite cannot restart it), nor for ``memory``; such a test is
skipped with that reason by :func:`gate`, called from the plugin's one gating place.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

import polybus

from . import backends
from .fixtures import BusFactory, Target
from .provisioning import StartFailed, Unavailable, provision_restartable
from .timing import profile


class _Brokers:
    """The session's restartable brokers, and the reasons some could not be provided."""

    def __init__(self, workdir: Path, url_given: bool) -> None:
        self.workdir = workdir
        self.url_given = url_given
        self.found: dict[str, Target | Unavailable] = {}

    def target(self, backend: str) -> Target:
        """The restartable broker for ``backend``, started once; a failure to provide it
        is remembered and raised again (as :class:`Unavailable` or StartFailed)."""
        found = self.found.get(backend)
        if found is None:
            try:
                broker = provision_restartable(backend, self.workdir, url_given=self.url_given)
                capabilities = polybus.connect(broker.url).capabilities  # parses only
                found = Target(backend, broker, capabilities, profile(backend))
            except Unavailable as exc:
                found = exc
            except Exception as exc:
                found = StartFailed(f"starting a restartable {backend} broker failed: {exc!r}")
            self.found[backend] = found
        if isinstance(found, Unavailable):
            raise found
        return found

    def stop_all(self) -> list[str]:
        """Stop every broker started; return the problems (each broker is tried)."""
        problems = []
        for backend, found in self.found.items():
            if isinstance(found, Target):
                try:
                    found.broker.stop()
                except Exception as exc:
                    problems.append(f"{backend} (restartable): {exc}")
        self.found.clear()
        return problems


_BROKERS = pytest.StashKey[_Brokers]()


def configure(config: pytest.Config, workdir: Path, url_given: bool) -> None:
    """Set up the session's restartable brokers and register the fixtures."""
    config.stash[_BROKERS] = _Brokers(workdir, url_given)
    # this module's fixtures become available to the suite
    config.pluginmanager.register(sys.modules[__name__], "polybus-restartable")


def gate(item: pytest.Item, backend: str) -> Target | None:
    """Provide ``item``'s restartable broker, or mark the test skipped (None).

    A broker that cannot be restarted from here (given by URL, ``memory``, program not
    installed) skips; one that fails to start fails the test when ``POLYBUS_REQUIRE``
    names the backend, as for the shared brokers.
    """
    try:
        return item.config.stash[_BROKERS].target(backend)
    except StartFailed as exc:
        if backends.required(backend):
            pytest.fail(f"{backend} is required ({backends.REQUIRE_ENV}) but: {exc}")
        reason = str(exc)
    except Unavailable as exc:
        reason = str(exc)
    item.add_marker(pytest.mark.skip(reason=reason.splitlines()[0]))
    return None


def stop_all(config: pytest.Config) -> list[str]:
    """Stop the session's restartable brokers; the problems, if any."""
    brokers = config.stash.get(_BROKERS, None)
    return [] if brokers is None else brokers.stop_all()


@pytest.fixture
def polybus_restartable_target(polybus_backend: str, request: pytest.FixtureRequest) -> Target:
    """The fault tier's private broker for the backend; ``.broker.restart()`` restarts
    it on the same port and data directory."""
    return request.config.stash[_BROKERS].target(polybus_backend)


@pytest_asyncio.fixture
async def polybus_restartable_bus_factory(
    polybus_restartable_target: Target,
) -> AsyncIterator[BusFactory]:
    """Opens fresh buses to the restartable broker; all are closed after the test."""
    factory = BusFactory(polybus_restartable_target)
    try:
        yield factory
    finally:
        await factory.close_all()
