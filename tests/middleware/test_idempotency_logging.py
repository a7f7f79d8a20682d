"""A skipped duplicate is never silent: exactly one INFO line per skip, naming the
topic, group, message id and strategy, for every strategy (and the atomic path)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import polybus
from polybus import Message, Middleware, Outgoing
from polybus import headers as h
from polybus.middleware import Idempotency, ProcessedIds, Sequences, TimeWindow
from polybus.stores import SQLiteStore

from .helpers import Outcomes, memory_url, running, until

LOGGER = "polybus.middleware.idempotency"
STRATEGIES: dict[str, ProcessedIds | Sequences | TimeWindow] = {
    "ProcessedIds": ProcessedIds(),
    "Sequences": Sequences(),
    "TimeWindow": TimeWindow(3600, by="id"),
    "atomic": ProcessedIds(),
}


def skips(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == LOGGER and r.getMessage().startswith("duplicate skipped")
    ]


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
async def test_each_skipped_duplicate_logs_one_info_line(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    store = SQLiteStore(tmp_path / "seen.db")
    strategy = STRATEGIES[kind]
    idem = Idempotency(store, strategy, atomic=kind == "atomic")
    outcomes = Outcomes()
    ran: list[str] = []

    async def handler(msg: Message) -> None:
        ran.append(msg.id)

    mw: list[Middleware] = [outcomes, idem]
    copy = Outgoing(b"pay 10", key="acct-1", headers={h.SEQUENCE: "1"})
    try:
        async with (
            polybus.connect(memory_url()) as bus,
            running(bus, mw, handler, group="billing", max_in_flight=1),
        ):
            msg_id = await bus.publish("orders", copy.body, key=copy.key, headers=copy.headers)
            await until(lambda: outcomes.count("ack") == 1, what="first copy processed")
            for _ in range(2):  # two redeliveries of the same message
                await bus.publish(
                    "orders", copy.body, key=copy.key, headers=copy.headers, id=msg_id
                )
            await until(lambda: outcomes.count("ack") == 3, what="both duplicates acked")
    finally:
        await store.close()

    assert ran == [msg_id]  # the duplicates never reached the handler
    lines = skips(caplog)
    assert len(lines) == 2  # one line per skip, no more
    for record in lines:
        assert record.levelno == logging.INFO
        text = record.getMessage()
        assert "topic=orders" in text
        assert "group=billing" in text
        assert f"id={msg_id}" in text
        expected = "ProcessedIds" if kind == "atomic" else kind
        assert f"strategy={expected}" in text
        assert "pay 10" not in text  # never the body


async def test_a_processed_message_logs_no_skip(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    store = SQLiteStore(tmp_path / "seen.db")
    outcomes = Outcomes()

    async def handler(msg: Message) -> None:
        return None

    try:
        async with (
            polybus.connect(memory_url()) as bus,
            running(bus, [outcomes, Idempotency(store)], handler),
        ):
            await bus.publish("orders", b"a")
            await bus.publish("orders", b"b")
            await until(lambda: outcomes.count("ack") == 2, what="both processed")
    finally:
        await store.close()
    assert skips(caplog) == []
