"""The backends the suite knows: names, URL schemes and the environment variables
that point the suite at a user's own broker."""

from __future__ import annotations

import os

BACKENDS: dict[str, str] = {
    "memory": "memory",
    "kafka": "kafka",
    "rabbitmq": "amqp",
    "sqs": "sqs",
    "pubsub": "pubsub",
    "nats": "nats",
    "redis": "redis",
}
"""Backend name -> URL scheme of its adapter."""

PRODUCT_FLAVOUR: dict[str, str] = {
    "memory": "memory",
    "kafka": "apache-kafka",
    "rabbitmq": "rabbitmq",
    "sqs": "aws-sqs",
    "pubsub": "google-pubsub",
    "nats": "nats-server",
    "redis": "redis-server",
}
"""The flavour assumed for an explicit URL when ``POLYBUS_<BACKEND>_FLAVOUR`` is unset:
the real product, so no known-defect entry of an emulator applies to it."""

REQUIRE_ENV = "POLYBUS_REQUIRE"


def check_backend(name: str) -> str:
    """Return ``name`` if it is a known backend, else raise ValueError naming the choices."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of: {', '.join(BACKENDS)}")
    return name


def url_env(backend: str) -> str:
    return f"POLYBUS_{backend.upper()}_URL"


def flavour_env(backend: str) -> str:
    return f"POLYBUS_{backend.upper()}_FLAVOUR"


def explicit_url(backend: str) -> str | None:
    """The URL the user gave for ``backend`` through the environment, if any."""
    return os.environ.get(url_env(backend)) or None


def explicit_flavour(backend: str) -> str:
    return os.environ.get(flavour_env(backend)) or PRODUCT_FLAVOUR[backend]


def required(backend: str) -> bool:
    """True when ``POLYBUS_REQUIRE`` (comma-separated names, or ``all``) names ``backend``:
    then a broker that cannot be provided fails the run instead of being skipped."""
    names = {n.strip() for n in os.environ.get(REQUIRE_ENV, "").split(",") if n.strip()}
    return "all" in names or backend in names
