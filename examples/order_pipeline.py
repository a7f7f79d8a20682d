"""An order pipeline: orders are published, two groups consume them, one order is poison.

    python examples/order_pipeline.py                      # memory://, no server
    POLYBUS_URL=amqp://guest:guest@127.0.0.1:5672/ python examples/order_pipeline.py

* ``fulfilment`` validates each order and ships it; an order it can never ship raises
  :class:`polybus.Reject`, and the reliability middleware (``polybus.defaults()``)
  moves it to the group's dead-letter queue instead of retrying it forever.
* ``analytics`` gets every order too (fan-out) and keeps running totals.
* At the end the program reads the dead letters back with ``bus.dead_letters`` and
  prints what happened. The application code never names a backend.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from dataclasses import asdict, dataclass

import polybus
from polybus import headers as h
from polybus.testing import Harness

DEADLINE = float(os.environ.get("ORDER_PIPELINE_DEADLINE", "60"))
"""Seconds the pipeline may take before the program gives up (a slow broker)."""


@dataclass(frozen=True)
class Order:
    id: int
    customer: str
    item: str
    quantity: int
    unit_price: float


ORDERS = [
    Order(1, "ada", "keyboard", 1, 49.0),
    Order(2, "grace", "monitor", 2, 189.0),
    Order(3, "alan", "cable", 5, 4.5),
    Order(4, "ada", "mouse", 1, 19.0),
    Order(5, "edsger", "laptop stand", 1, 35.0),
    Order(6, "barbara", "headset", 1, 79.0),
    Order(7, "ken", "webcam", -3, 59.0),  # the poison order: negative quantity
    Order(8, "grace", "cable", 2, 4.5),
    Order(9, "linus", "dock", 1, 129.0),
    Order(10, "alan", "keyboard", 1, 49.0),
]
POISON = {7}


def reliability() -> list[polybus.Middleware]:
    """``polybus.defaults()``: poison guard, dead letter, circuit breaker, retry."""
    return polybus.defaults()


async def main() -> int:
    run = uuid.uuid4().hex[:8]  # fresh names, so reruns on a real broker do not mix
    topic = f"orders-{run}"
    shipped: list[Order] = []
    rejected: list[int] = []
    seen_by_analytics: list[int] = []
    revenue = 0.0

    async with polybus.connect() as bus:
        print(f"backend: {bus.backend} ({bus!r})")
        worker = polybus.Worker(bus, middleware=reliability())

        @worker.handler(topic, group="fulfilment", max_in_flight=8)
        async def fulfil(order: Order) -> None:  # a body that is not an Order: DLQ
            if order.quantity <= 0:
                rejected.append(order.id)
                raise polybus.Reject(f"order {order.id}: quantity must be positive")
            shipped.append(order)
            print(f"  fulfilment: shipped order {order.id} ({order.quantity} x {order.item})")

        @worker.handler(topic, group="analytics", max_in_flight=8)
        async def analyse(order: Order) -> None:
            nonlocal revenue
            seen_by_analytics.append(order.id)
            revenue += order.quantity * order.unit_price

        # the harness runs the worker and knows when every order is settled for good by
        # both groups (retries included): no polling
        async with Harness(worker, timeout=DEADLINE) as harness:
            batch = [polybus.Outgoing(asdict(o), key=o.customer) for o in ORDERS]
            await harness.publish_many(topic, batch)
            print(f"published {len(ORDERS)} orders to {topic!r}")
            try:
                await harness.drain()
            except TimeoutError as exc:
                print(f"gave up after {DEADLINE}s: {exc}", file=sys.stderr)

        print(f"analytics: {len(seen_by_analytics)} orders, revenue {revenue:.2f}")
        dead: list[polybus.Message] = []
        async with bus.dead_letters(topic, group="fulfilment") as letters:
            while len(dead) < len(POISON):
                try:
                    letter = await letters.get(timeout=DEADLINE)
                except TimeoutError:
                    break
                dead.append(letter)
                await letter.ack()
        for letter in dead:
            print(
                f"dead letter: order {letter.json()['id']} (message {letter.id}): "
                f"{letter.headers.get(h.DLQ_REASON)}; "
                f"error {letter.headers.get(h.DLQ_ERROR_TYPE)}: "
                f"{letter.headers.get(h.DLQ_ERROR_MESSAGE)}"
            )

    ok = (
        {o.id for o in shipped} == {o.id for o in ORDERS} - POISON
        and sorted(seen_by_analytics) == [o.id for o in ORDERS]
        and [d.json()["id"] for d in dead] == sorted(POISON)
    )
    print(
        "pipeline complete" if ok else "pipeline INCOMPLETE", file=sys.stdout if ok else sys.stderr
    )
    return 0 if ok else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main()))
