"""The order service's handlers under test: the real pipeline and middleware, through
polybus.testing, with no sleeps or polling. memory:// by default; with POLYBUS_URL set
the same test runs against that broker (CI runs it on RabbitMQ too)."""

from __future__ import annotations

import uuid
from dataclasses import asdict

import polybus
from polybus import headers as h
from polybus.testing import Harness

from .order_service import Books, Order, make_worker

ORDERS = [
    Order(1, "ada", "keyboard", 1, 49.0),
    Order(2, "grace", "monitor", 2, 189.0),
    Order(7, "ken", "webcam", -3, 59.0),  # can never ship
    Order(8, "ada", "mouse", 1, 19.0),
    Order(9, "ada", "cable", 3, 5.0),
]


async def test_orders_are_shipped_counted_and_the_bad_ones_dead_lettered() -> None:
    topic = f"orders-{uuid.uuid4().hex[:8]}"  # fresh names: a real broker keeps groups
    books = Books()
    async with Harness(make_worker(polybus.connect(), books, topic)) as harness:
        assert books.open, "the startup hook ran before the first message"
        ids = await harness.publish_many(
            topic, [polybus.Outgoing(asdict(o), key=o.customer) for o in ORDERS]
        )
        not_an_order = await harness.publish(topic, {"id": "seven"})
        await harness.drain()

        shipped, poison = ids[:2] + ids[3:], ids[2]
        assert [harness.outcome(i, "fulfilment") for i in shipped] == ["ack"] * 4
        assert harness.outcome(poison, "fulfilment") == "dead_letter"
        assert harness.outcome(not_an_order, "fulfilment") == "dead_letter"
        assert harness.outcome(not_an_order, "analytics") == "dead_letter"
        assert sorted(books.shipped) == [1, 2, 8, 9]
        assert books.revenue == sum(o.quantity * o.unit_price for o in ORDERS)
        assert books.history == {"ada": [1, 8, 9], "grace": [2], "ken": [7]}, "per-key order"
        assert harness.outcome(not_an_order, "history") == "dead_letter"

        letters = {m.id: m for m in await harness.dead_letters(topic, "fulfilment")}
        assert (
            letters[poison].headers[h.DLQ_REASON] == "rejected: order 7: quantity must be positive"
        )
        assert (
            letters[not_an_order].headers[h.DLQ_ERROR_TYPE] == "polybus.errors.SerializationError"
        )
    assert not books.open, "the shutdown hook ran after the last message"
