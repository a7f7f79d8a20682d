"""Brokers for the adapter tests: one per backend for the whole run, shared.

Each ``<backend>_url`` fixture is the URL of the session's broker for that backend,
provided once by the conformance plugin (:func:`polybus_conformance.plugin.session_broker`
over ``polybus_conformance.provisioning.provision``): ``POLYBUS_<BACKEND>_URL`` when it
is set, else a private local broker process started on a free port, stopped at the end
of the session and killed if the session is ended by SIGTERM. When the conformance suite
runs in the same session it uses the very same brokers, so each starts once per run.

When no broker can be provided, a test that asks for one is skipped with the reason, or
fails when ``POLYBUS_REQUIRE`` names the backend or says ``all``. Tests use unique topic
and group names, so sharing one broker between them is safe.
"""

from __future__ import annotations

import pytest

from polybus.config import parse_url
from polybus_conformance import backends
from polybus_conformance.plugin import session_broker
from polybus_conformance.provisioning import Unavailable
from polybus_conformance.provisioning.tansu import TEST_GROUP_TIMINGS
from polybus_conformance.provisioning.urls import parse_options, with_options


def _url(request: pytest.FixtureRequest, backend: str) -> str:
    try:
        return session_broker(request.config, backend).url
    except Unavailable as exc:
        if backends.required(backend):
            pytest.fail(f"{backend} is required ({backends.REQUIRE_ENV}) but: {exc}")
        pytest.skip(str(exc).splitlines()[0])


@pytest.fixture(scope="session")
def kafka_url(request: pytest.FixtureRequest) -> str:
    """A Kafka broker, with short group timings unless the URL sets its own.

    A group join takes about half of ``session.timeout.ms`` on tansu: the short
    timings are test speed only and change no guarantee.
    """
    url = _url(request, "kafka")
    if "session.timeout.ms" in parse_url(url).query:
        return url
    return with_options(url, parse_options(TEST_GROUP_TIMINGS))


@pytest.fixture(scope="session")
def rabbitmq_url(request: pytest.FixtureRequest) -> str:
    """A RabbitMQ broker (``amqp://``)."""
    return _url(request, "rabbitmq")


@pytest.fixture(scope="session")
def nats_url(request: pytest.FixtureRequest) -> str:
    """A NATS server with JetStream."""
    return _url(request, "nats")


@pytest.fixture(scope="session")
def sqs_url(request: pytest.FixtureRequest) -> str:
    """SQS and SNS (moto server unless ``POLYBUS_SQS_URL`` names another endpoint)."""
    return _url(request, "sqs")


@pytest.fixture(scope="session")
def pubsub_url(request: pytest.FixtureRequest) -> str:
    """Google Cloud Pub/Sub (the emulator unless ``POLYBUS_PUBSUB_URL`` says otherwise)."""
    return _url(request, "pubsub")


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """A Redis server: ``POLYBUS_REDIS_URL``, else a private redis-server without
    persistence (never the machine's own at 6379, which the store tests use)."""
    return _url(request, "redis")
