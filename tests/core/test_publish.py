"""Publishing: body encodings, content types, validation before anything is sent."""

from __future__ import annotations

import dataclasses
import os
import uuid

import pydantic
import pytest

import polybus
from polybus import headers as h
from polybus.errors import InvalidMessage, MessageTooLarge, SerializationError

from .helpers import QUIET, WAIT, name


class Order(pydantic.BaseModel):
    id: int
    item: str


@dataclasses.dataclass
class PlainOrder:
    id: int
    item: str


@pytest.mark.parametrize(
    ("body", "content_type", "raw"),
    [
        (b"\x00\xffbin", "application/octet-stream", b"\x00\xffbin"),
        (bytearray(b"ba"), "application/octet-stream", b"ba"),
        ("héllo", "text/plain; charset=utf-8", "héllo".encode()),
        ({"id": 7, "ok": True}, "application/json", b'{"id":7,"ok":true}'),
        ([1, "zwei"], "application/json", b'[1,"zwei"]'),
        (Order(id=7, item="tea"), "application/json", b'{"id":7,"item":"tea"}'),
    ],
    ids=["bytes", "bytearray", "str", "dict", "list", "pydantic"],
)
async def test_body_encodings_and_content_type(
    bus: polybus.Bus, body: object, content_type: str, raw: bytes
) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g") as sub:
        await bus.publish(topic, body)
        msg = await sub.get(timeout=WAIT)
        await msg.ack()
    assert msg.body == raw
    assert msg.content_type == content_type


async def test_explicit_content_type_wins(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g") as sub:
        await bus.publish(topic, b"<a/>", content_type="application/xml")
        msg = await sub.get(timeout=WAIT)
        await msg.ack()
    assert msg.content_type == "application/xml"


async def test_message_fields_survive_the_trip(bus: polybus.Bus) -> None:
    topic, given = name(), uuid.uuid4().hex
    async with bus.subscribe(topic, group="g") as sub:
        sent = await bus.publish(topic, {"id": 1}, key="k1", headers={"tenant": "acme"}, id=given)
        msg = await sub.get(timeout=WAIT)
        await msg.ack()
    assert sent == given == msg.id
    assert (msg.topic, msg.group, msg.key) == (topic, "g", "k1")
    assert msg.headers == {"tenant": "acme"}
    assert msg.published_at is not None
    assert msg.published_at.tzinfo is not None
    assert msg.json() == {"id": 1}


async def test_generated_ids_are_uuid4_hex(bus: polybus.Bus) -> None:
    topic = name()
    await bus.declare(topic)
    ids = await bus.publish_many(topic, [b"x"] * 200)
    ids += [await bus.publish(topic, b"y") for _ in range(20)]
    assert len(set(ids)) == 220
    for value in ids:
        parsed = uuid.UUID(value)
        assert (parsed.hex, parsed.version, parsed.variant) == (value, 4, uuid.RFC_4122)


def test_decoding_helpers() -> None:
    msg = polybus.Message(id="m", topic="t", body=b'{"id": 3, "item": "pen"}')
    assert msg.json() == {"id": 3, "item": "pen"}
    assert msg.text() == '{"id": 3, "item": "pen"}'
    assert msg.decode(Order) == Order(id=3, item="pen")
    assert msg.decode(PlainOrder) == PlainOrder(id=3, item="pen")


@pytest.mark.parametrize(
    ("body", "call"),
    [
        (b"{not json", lambda m: m.json()),
        (b"\xff\xfe", lambda m: m.json()),
        (b"\xff\xfe", lambda m: m.text()),
        (b'{"id": "x"}', lambda m: m.decode(Order)),
        (b"[1, 2]", lambda m: m.decode(PlainOrder)),
        (b'{"id": 1, "colour": "red"}', lambda m: m.decode(PlainOrder)),
        (b"{oops", lambda m: m.decode(Order)),
    ],
    ids=["json", "json-binary", "text", "pydantic", "plain-not-object", "plain-field", "bad"],
)
def test_decoding_failures_are_serialization_errors(body: bytes, call: object) -> None:
    msg = polybus.Message(id="m", topic="t", body=body)
    with pytest.raises(SerializationError):
        call(msg)  # type: ignore[operator]


@pytest.mark.parametrize("body", [object(), {"x": float("nan")}, {1j}])
async def test_unencodable_body_is_a_serialization_error(bus: polybus.Bus, body: object) -> None:
    with pytest.raises(SerializationError, match="body"):
        await bus.publish(name(), body)


@pytest.mark.parametrize("header", [h.ID, h.DLQ_REASON, "polybus-anything"])
async def test_reserved_headers_are_refused(bus: polybus.Bus, header: str) -> None:
    with pytest.raises(InvalidMessage, match=header):
        await bus.publish(name(), b"x", headers={header: "1"})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"headers": {"n": 1}}, "must be str"),
        ({"key": 5}, "key"),
        ({"id": ""}, "id"),
    ],
)
async def test_invalid_message_fields(
    bus: polybus.Bus, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(InvalidMessage, match=match):
        await bus.publish(name(), b"x", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("topic", ["", None, 7, ["orders"]], ids=["empty", "none", "int", "list"])
async def test_bad_topic_is_a_config_error(bus: polybus.Bus, topic: object) -> None:
    with pytest.raises(polybus.ConfigError) as info:
        await bus.publish(topic, b"x")  # type: ignore[arg-type]
    assert info.value.field == "topic"
    with pytest.raises(polybus.ConfigError):
        await bus.publish_many(topic, [b"x"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        polybus.Outgoing(b"x", headers={"polybus-id": "forged"}),
        polybus.Outgoing(object()),
        polybus.Outgoing(b"y" * 2048),
    ],
    ids=["reserved-header", "unencodable", "too-large"],
)
async def test_publish_many_validates_every_item_before_sending_any(
    url: str, bad: polybus.Outgoing
) -> None:
    topic = name()
    async with (
        polybus.connect(url, max_message_size=1024) as bus,
        bus.subscribe(topic, group="g") as sub,
    ):
        batch = [polybus.Outgoing(b"good-1"), polybus.Outgoing(b"good-2"), bad]
        with pytest.raises((InvalidMessage, SerializationError, MessageTooLarge)):
            await bus.publish_many(topic, batch)
        with pytest.raises(TimeoutError):  # not even the good ones went out
            await sub.get(timeout=QUIET)


async def test_message_too_large_names_size_and_limit(url: str) -> None:
    async with polybus.connect(url, max_message_size=100) as bus:
        with pytest.raises(MessageTooLarge) as info:
            await bus.publish(name(), b"z" * 200)
    assert info.value.limit == 100
    assert info.value.size > 200
    assert not info.value.retryable
    assert "100" in str(info.value)


async def test_publish_many_accepts_bare_bodies_and_outgoing(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g") as sub:
        ids = await bus.publish_many(
            topic, [b"raw", "text", {"j": 1}, polybus.Outgoing(b"o", key="k", id="fixed")]
        )
        got = [await sub.get(timeout=WAIT) for _ in range(4)]
        for msg in got:
            await msg.ack()
    assert ids[3] == "fixed"
    assert [m.id for m in got] == ids
    assert [m.body for m in got] == [b"raw", b"text", b'{"j":1}', b"o"]
    assert got[3].key == "k"
    assert await bus.publish_many(topic, []) == []


def test_ids_are_unique_across_pool_refills_and_in_a_forked_child() -> None:
    from polybus._message import new_id

    parent = [new_id() for _ in range(600)]  # more than one pool's worth
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids must not be the parent's next ones
        os.write(write, "".join(new_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    text = os.read(read, 4096).decode()
    os.close(read)
    child = {text[i : i + 32] for i in range(0, len(text), 32)}
    later = [new_id() for _ in range(600)]
    assert len(child) == 4
    assert len(set(parent) | set(later) | child) == 1204
