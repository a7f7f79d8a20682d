"""Broker provisioning: where the suite gets a broker for a backend, in this order:

1. an explicit URL (``POLYBUS_<BACKEND>_URL``; flavour from ``POLYBUS_<BACKEND>_FLAVOUR``);
2. a container through testcontainers, when a Docker daemon answers a ping;
3. a local server process, when its program is installed (one launcher per broker);
4. otherwise :class:`Unavailable` with the reason (the plugin skips, or fails when
   ``POLYBUS_REQUIRE`` names the backend).
"""

from __future__ import annotations

from pathlib import Path

from .. import backends
from . import containers
from .base import Broker, Launcher, StartFailed, Unavailable
from .moto import MotoLauncher
from .nats import NatsLauncher
from .pubsub_emulator import PubSubEmulatorLauncher
from .rabbitmq import RabbitMQLauncher
from .tansu import TansuLauncher

__all__ = ["LAUNCHERS", "Broker", "Launcher", "StartFailed", "Unavailable", "provision"]

LAUNCHERS: dict[str, Launcher] = {
    "kafka": TansuLauncher(),
    "rabbitmq": RabbitMQLauncher(),
    "nats": NatsLauncher(),
    "sqs": MotoLauncher(),
    "pubsub": PubSubEmulatorLauncher(),
}


def provision(backend: str, workdir: Path, *, use_docker: bool | None = None) -> Broker:
    """A broker for ``backend``, started under ``workdir`` if one has to be started.

    Raises :class:`Unavailable` (or :class:`StartFailed`) with the reason.
    """
    backends.check_backend(backend)
    url = backends.explicit_url(backend)
    if url:
        return Broker(backend, url, backends.explicit_flavour(backend), "url")
    if backend == "memory":
        return Broker(backend, "memory://conformance", "memory", "builtin")
    if use_docker is None:
        use_docker = containers.docker_answers()
    if use_docker:
        return containers.start(backend)
    launcher = LAUNCHERS[backend]
    if launcher.find() is None:
        raise Unavailable(
            f"no {backend} broker: {backends.url_env(backend)} is not set, no Docker "
            f"daemon answers, and {launcher.program} is not installed"
        )
    directory = workdir / backend
    directory.mkdir(parents=True, exist_ok=True)
    return launcher.start(directory)
