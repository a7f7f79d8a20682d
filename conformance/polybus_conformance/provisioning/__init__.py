"""Broker provisioning: where the suite gets a broker for a backend, in this order:

1. an explicit URL (``POLYBUS_<BACKEND>_URL``; flavour from ``POLYBUS_<BACKEND>_FLAVOUR``);
2. a container through testcontainers, when a Docker daemon answers a ping;
3. a local server process, when its program is installed (one launcher per broker);
4. otherwise :class:`Unavailable` with the reason (the plugin skips, or fails when
   ``POLYBUS_REQUIRE`` names the backend).

The fault tier gets its own broker from :func:`provision_restartable`: always a local
process the suite can stop and start again on the same port and data directory, with
storage that persists where the broker can persist (tansu on S3, nats-server with a
store directory, a RabbitMQ node with its Mnesia directory, redis-server with an
append-only file). It is separate from the
broker the other tiers share, so a broker that a fault test leaves broken cannot turn
every later test red.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .. import backends
from . import containers
from .base import Broker, Launcher, StartFailed, Unavailable
from .moto import MotoLauncher
from .nats import NatsLauncher
from .pubsub_emulator import PubSubEmulatorLauncher
from .rabbitmq import RabbitMQLauncher
from .redis import RedisLauncher
from .tansu import TansuLauncher

__all__ = [
    "LAUNCHERS",
    "RESTARTABLE_LAUNCHERS",
    "Broker",
    "Launcher",
    "StartFailed",
    "Unavailable",
    "provision",
    "provision_restartable",
]

LAUNCHERS: dict[str, Launcher] = {
    "kafka": TansuLauncher(),
    "rabbitmq": RabbitMQLauncher(),
    "nats": NatsLauncher(),
    "sqs": MotoLauncher(),
    "pubsub": PubSubEmulatorLauncher(),
    "redis": RedisLauncher(),
}

RESTARTABLE_LAUNCHERS: dict[str, Launcher] = {
    **LAUNCHERS,
    # tansu keeps records in memory by default; on S3 (a private moto) they persist
    "kafka": TansuLauncher(storage="s3"),
    # an append-only file (fsync every second), so confirmed entries survive a restart
    "redis": RedisLauncher(persistent=True),
}
CANNOT_RESTART_URL = "cannot restart a broker given by URL"


def provision_restartable(backend: str, workdir: Path, *, url_given: bool = False) -> Broker:
    """A private local broker for ``backend`` that :meth:`Broker.restart` can restart.

    Raises :class:`Unavailable` when the user pointed the suite at their own broker
    (``url_given`` or ``POLYBUS_<BACKEND>_URL``: it cannot be restarted from here), for
    ``memory`` (it lives inside the test process) and when the program is not installed;
    :class:`StartFailed` when it does not become ready.
    """
    backends.check_backend(backend)
    if url_given or backends.explicit_url(backend):
        raise Unavailable(CANNOT_RESTART_URL)
    launcher = RESTARTABLE_LAUNCHERS.get(backend)
    if launcher is None:
        raise Unavailable(f"{backend} runs inside the test process: there is no broker to restart")
    if launcher.find() is None:
        raise Unavailable(f"no restartable {backend} broker: {launcher.program} is not installed")
    directory = workdir / f"{backend}-restartable"
    # private to this run: a previous run's streams and queues would only slow restarts
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return launcher.start(directory)


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
