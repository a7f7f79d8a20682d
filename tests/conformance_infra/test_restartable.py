"""The fault tier's restartable brokers: a restart keeps the port and (where the
storage persists) the data; a broker given by URL is refused with the reason; the tier
option selects the fault tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from polybus_conformance.provisioning import (
    RESTARTABLE_LAUNCHERS,
    Unavailable,
    provision_restartable,
)
from polybus_conformance.provisioning.base import port_open

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(120)


def _kafka_port(url: str) -> int:
    return int(url.split("://", 1)[1].split("?", 1)[0].rsplit(":", 1)[1])


def test_tansu_on_s3_keeps_topics_across_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    monkeypatch.delenv("POLYBUS_KAFKA_URL", raising=False)
    if RESTARTABLE_LAUNCHERS["kafka"].find() is None:
        pytest.fail("tansu is not installed on this machine")
    broker = provision_restartable("kafka", tmp_path)
    try:
        port = _kafka_port(broker.url)
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0})
        admin.create_topics([NewTopic("restart-check", num_partitions=1)])["restart-check"].result(
            timeout=10
        )
        before = set(broker.pids)
        broker.restart(hard=True)
        assert port_open(port), "the restarted broker must listen on the same port"
        assert set(broker.pids) != before, "a restart starts a new broker process"
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0})
        assert "restart-check" in admin.list_topics(timeout=10).topics
    finally:
        broker.stop()
    assert not port_open(port)
    assert not broker.restartable, "a stopped broker cannot be restarted"


def test_broker_given_by_url_cannot_be_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLYBUS_NATS_URL", "nats://broker.example:4222")
    with pytest.raises(Unavailable, match="cannot restart a broker given by URL"):
        provision_restartable("nats", tmp_path)
    assert not list(tmp_path.iterdir()), "nothing may be started for an explicit URL"


def test_memory_has_no_broker_to_restart(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="inside the test process"):
        provision_restartable("memory", tmp_path)


def test_fault_tier_is_off_by_default(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.fault
        def test_f(polybus_backend):
            pass

        def test_c(polybus_backend):
            pass
        """
    )
    pytester.runpytest(
        "-p", "no:cacheprovider", "-p", "polybus_conformance.plugin"
    ).assert_outcomes(passed=1, deselected=1)
    both = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "-p",
        "polybus_conformance.plugin",
        "--polybus-tier=conformance,fault",
    )
    both.assert_outcomes(passed=1, skipped=1)  # memory: no broker to restart
