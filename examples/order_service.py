"""An order service: typed handlers, two groups, the reliability middleware, lifespan hooks.

Run it as a service (``POLYBUS_URL`` or ``--url`` picks the broker; memory:// by default):

    polybus run examples.order_service:worker
    polybus run examples.order_service:worker --url amqp://guest:guest@127.0.0.1:5672/

and publish an order to it from a shell with ``polybus.sync``. Its test,
``examples/test_order_service.py``, runs the same handlers through
:class:`polybus.testing.Harness`, with no sleeps or polling.

* ``fulfilment`` ships each order; an order that can never ship raises
  :class:`polybus.Reject` and is dead-lettered at once; a body that is not an order is
  dead-lettered too, with the validation error.
* ``analytics`` receives every order as well (fan-out) and keeps the revenue. Both groups
  are unordered (the default): their consumers share the work, whatever the key.
* ``history`` keeps each customer's orders in the order they were placed: it asks for
  ``ordering="key"`` (orders are published with the customer as key), so one customer's
  orders are handled one at a time while other customers' run beside them. A backend
  without per-key order (SQS standard queues, Redis Streams) refuses this group with a
  ``ConfigError`` when the worker starts, rather than mixing the orders up.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import polybus

TOPIC = os.environ.get("ORDER_SERVICE_TOPIC", "orders")
log = logging.getLogger("order_service")


@dataclass(frozen=True)
class Order:
    id: int
    customer: str
    item: str
    quantity: int
    unit_price: float


@dataclass
class Books:
    """What the service has done, for its owner (and its tests) to look at."""

    shipped: list[int] = field(default_factory=list)
    revenue: float = 0.0
    history: dict[str, list[int]] = field(default_factory=dict)
    open: bool = False


def make_worker(bus: polybus.Bus, books: Books, topic: str = TOPIC) -> polybus.Worker:
    """The service's worker on ``bus`` for ``topic``; ``books`` records what it did."""
    worker = polybus.Worker(bus, middleware=polybus.defaults())

    @worker.on_startup
    async def open_books() -> None:  # e.g. open a database pool
        books.open = True

    @worker.on_shutdown
    async def close_books() -> None:  # runs after the last message settled
        books.open = False

    @worker.handler(topic, group="fulfilment", max_in_flight=8)
    async def fulfil(order: Order) -> None:
        if order.quantity <= 0:
            raise polybus.Reject(f"order {order.id}: quantity must be positive")
        books.shipped.append(order.id)
        log.info("shipped order %d (%d x %s)", order.id, order.quantity, order.item)

    @worker.handler(topic, group="analytics", max_in_flight=8)
    async def analyse(order: Order, msg: polybus.Message) -> None:
        books.revenue += order.quantity * order.unit_price
        log.info("order %d from %s counted (attempt %d)", order.id, msg.key, msg.delivery_attempt)

    @worker.handler(topic, group="history", max_in_flight=8, ordering="key")
    async def remember(order: Order) -> None:
        books.history.setdefault(order.customer, []).append(order.id)
        log.info("order %d of %s remembered", order.id, order.customer)

    return worker


books = Books()
worker = make_worker(polybus.connect(), books)
"""The service ``polybus run examples.order_service:worker`` starts."""
