"""The sync facade: a round trip, and signatures that cannot drift from the async API."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect

import pytest

import polybus
import polybus.sync
from polybus.sync import SyncBus, SyncMessage, SyncSubscription

from .helpers import QUIET, WAIT, name

PAIRS = [
    (polybus.Bus, SyncBus),
    (polybus.Subscription, SyncSubscription),
    (polybus.Message, SyncMessage),
]


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    out = {}
    for attr, value in vars(cls).items():
        if attr.startswith("_") or not inspect.isfunction(value):
            continue
        out[attr] = inspect.signature(value)
    return out


def public_properties(cls: type) -> set[str]:
    names = {a for a, v in vars(cls).items() if isinstance(v, property) and not a.startswith("_")}
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
    return names


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda c: c.__name__)
def test_sync_methods_mirror_async_signatures(async_cls: type, sync_cls: type) -> None:
    async_methods = public_methods(async_cls)
    sync_methods = public_methods(sync_cls)
    assert async_methods, "nothing compared"
    missing = sorted(set(async_methods) - set(sync_methods))
    assert missing == [], f"{sync_cls.__name__} lacks {missing}"
    for attr, signature in async_methods.items():
        expected = [twin(p) for p in signature.parameters.values()]
        got = list(sync_methods[attr].parameters.values())
        assert got == expected, f"{sync_cls.__name__}.{attr} differs from {async_cls.__name__}"


def twin(param: inspect.Parameter) -> inspect.Parameter:
    """The parameter as the sync facade declares it: a Message is a SyncMessage there."""
    annotation = param.annotation
    if isinstance(annotation, str):
        annotation = annotation.replace("[Message]", "[SyncMessage]")
    return param.replace(annotation=annotation)


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda c: c.__name__)
def test_sync_classes_expose_the_same_properties(async_cls: type, sync_cls: type) -> None:
    internal = {"receipt"}  # the adapter's handle, never part of the user's API
    wanted = public_properties(async_cls) - internal
    exposed = {a for a in wanted if hasattr(sync_cls, a)}
    instance_attrs = {"topic", "group", "max_in_flight", "delivery", "max_deliveries"}
    if sync_cls is SyncSubscription:
        wanted -= instance_attrs  # reached through .subscription
    assert wanted - exposed == set()


def test_sync_connect_mirrors_connect() -> None:
    expected = list(inspect.signature(polybus.connect).parameters.values())
    assert list(inspect.signature(polybus.sync.connect).parameters.values()) == expected


def test_sync_round_trip(url: str) -> None:
    topic = name()
    with polybus.sync.connect(url) as bus:
        assert "open" in repr(bus)
        with bus.subscribe(topic, group="g", max_in_flight=4) as sub:
            sent = bus.publish(topic, {"n": 1}, key="k", headers={"h": "v"})
            ids = bus.publish_many(topic, [b"two", polybus.Outgoing("three", key="k3")])
            first = sub.get(timeout=WAIT)
            assert (first.id, first.json(), first.key) == (sent, {"n": 1}, "k")
            assert first.headers == {"h": "v"}
            assert first.delivery_attempt == 1
            first.nack()
            assert first.settled
            assert first.settlement == "nack"
            got = []
            for msg in sub:  # the iterator protocol
                got.append((msg.id, msg.delivery_attempt))
                msg.ack()
                if len(got) == 3:
                    break
            assert sub.unsettled == 0
        assert sorted(got) == sorted([(sent, 2), (ids[0], 1), (ids[1], 1)])
        with bus.subscribe(topic, group="dl") as sub:
            bus.publish(topic, b"poison")
            bad = sub.get(timeout=WAIT)
            bad.dead_letter("cannot use", error=ValueError("nope"))
        with bus.dead_letters(topic, group="dl") as dead:
            copy = dead.get(timeout=WAIT)
            copy.ack()
            with pytest.raises(TimeoutError):
                dead.get(timeout=QUIET)
        assert copy.id == bad.id
        assert copy.headers[polybus.headers.DLQ_REASON] == "cannot use"
    assert "closed" in repr(bus.bus)


async def test_sync_publisher_wakes_an_async_consumer_in_another_thread(url: str) -> None:
    topic = name()
    async with polybus.connect(url) as bus, bus.subscribe(topic, group="g") as sub:
        waiting = asyncio.create_task(sub.get(timeout=WAIT))

        def publish_from_thread() -> str:
            with polybus.sync.connect(url) as sync_bus:
                return sync_bus.publish(topic, b"across threads")

        sent = await asyncio.to_thread(publish_from_thread)
        msg = await waiting
        await msg.ack()
    assert msg.id == sent
