"""The Kafka consumer's shared state, record mapping and topic names: pure, no broker.

Records are confluent-kafka's own ``Message`` objects (its constructor is meant for
tests); what the broker does with them is covered by test_kafka_adapter.py,
test_kafka_rebalance.py and the conformance suite.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from confluent_kafka import Message as Record

from polybus import Envelope, headers
from polybus.spi import BYTES, JSON
from polybus_kafka._records import Decoder, kafka_topic, record_headers
from polybus_kafka._state import ConsumerState

STAMP = 1_764_400_000_000


def record(
    offset: int,
    *,
    partition: int = 0,
    key: bytes | None = None,
    headers_: list[tuple[str, bytes | None]] | None = None,
) -> Record:
    return Record(
        topic="t",
        partition=partition,
        offset=offset,
        key=key,
        value=b"v%d" % offset,
        headers=[(headers.ID, b"id-%d" % offset)] if headers_ is None else headers_,
        timestamp=(1, STAMP),
    )


def state(*partitions: int, capacity: int = 100) -> ConsumerState:
    out = ConsumerState(Decoder("t", "g"), capacity)
    out.assigned(list(partitions) or [0])
    return out


def test_queued_acks_reach_the_ledger_before_the_commit() -> None:
    s = state()
    s.add([record(o) for o in range(3)])
    taken = s.take(10, 0.0)
    assert [m.id for m in taken] == ["id-0", "id-1", "id-2"]
    assert [m.delivery_attempt for m in taken] == [1, 1, 1]
    s.acked.extend([taken[0].receipt, taken[1].receipt])  # what ack() of a batch does
    assert s.actions(0.0).commits == [(0, 2)]  # offset 2 is still in flight
    s.acked.append(taken[2].receipt)
    assert s.positions() == [(0, 3)]


def test_a_partitions_records_of_one_key_are_handed_out_together() -> None:
    # no key gating here: the core gates keys in key-ordered groups, and an unordered
    # group processes a partition's records concurrently
    s = state()
    s.add([record(0, key=b"k"), record(1, key=b"k"), record(2, key=b"other")])
    taken = s.take(10, 0.0)
    assert [(m.id, m.key) for m in taken] == [("id-0", "k"), ("id-1", "k"), ("id-2", "other")]
    s.acked.extend([taken[2].receipt, taken[1].receipt])  # settled out of order
    assert s.positions() == [(0, 0)]  # offset 0 is unsettled: the commit waits for it
    s.acked.append(taken[0].receipt)
    assert s.positions() == [(0, 3)]


def test_take_respects_the_limit_and_keeps_the_rest_in_order() -> None:
    s = state(0, 1)
    s.add([record(0), record(0, partition=1), record(1), record(1, partition=1)])
    first = s.take(3, 0.0)
    assert [m.receipt[:2] for m in first] == [(0, 0), (1, 0), (0, 1)]
    assert [m.receipt[:2] for m in s.take(3, 0.0)] == [(1, 1)]
    assert s.room() == 100


def test_nack_rewinds_the_partition_and_counts_the_attempt() -> None:
    s = state(0, 1)
    s.add([record(0), record(1), record(0, partition=1)])
    taken = s.take(1, 0.0)  # offset 0 of partition 0; the others stay buffered
    assert s.nack(taken[0].receipt, None)
    actions = s.actions(0.0)
    assert actions.seeks == [(0, 0)]
    assert s.take(10, 0.0)[0].receipt[:2] == (1, 0)  # partition 0's buffer was dropped
    s.add([record(0), record(1)])  # the re-fetch after the seek
    again = s.take(10, 0.0)
    assert [(m.id, m.delivery_attempt) for m in again] == [("id-0", 2), ("id-1", 1)]


def test_nack_keeps_later_messages_in_flight_and_skips_their_refetch() -> None:
    s = state()
    s.add([record(o) for o in range(3)])
    m0, m1, m2 = s.take(10, 0.0)
    assert s.nack(m1.receipt, None)
    assert s.actions(0.0).seeks == [(0, 1)]
    s.add([record(1), record(2)])  # the seek fetches 2 again: it is in flight, skipped
    (back,) = s.take(10, 0.0)
    assert (back.id, back.delivery_attempt) == ("id-1", 2)
    s.acked.extend([m0.receipt, m2.receipt, back.receipt])
    assert s.positions() == [(0, 3)]


def test_a_delayed_nack_pauses_the_partition_until_it_is_due() -> None:
    s = state(0, 1)
    s.add([record(0), record(0, partition=1)])
    first = s.take(1, 0.0)[0]
    assert s.nack(first.receipt, 3600.0)
    assert s.actions(0.0).delayed == {0}
    s.add([record(0)])  # fetched after the seek, while the partition is due later
    assert [m.receipt[:2] for m in s.take(10, 0.0)] == [(1, 0)]  # other partitions go on
    assert s.buffered() == 1  # partition 0's record waits for its delay
    (again,) = s.take(10, float("inf"))
    assert (again.id, again.delivery_attempt) == ("id-0", 2)


def test_acks_of_a_revoked_partition_are_ignored() -> None:
    s = state()
    s.add([record(0)])
    (msg,) = s.take(10, 0.0)
    assert s.revoked([0]) == [(0, 0)]  # nothing settled: the position stays at 0
    s.assigned([0])  # back again, a new generation
    s.acked.append(msg.receipt)
    s.add([record(0)])  # the new assignment delivers it again
    (again,) = s.take(10, 0.0)
    assert again.id == msg.id
    assert s.positions() == [(0, 0)]  # the stale ack settled nothing


def test_a_revoking_partition_hands_out_nothing_and_counts_its_unsettled() -> None:
    s = state(0, 1)
    s.add([record(0), record(1), record(0, partition=1)])
    m0 = s.take(1, 0.0)[0]
    s.revoking([0])
    assert s.unsettled([0]) == 1
    s.add([record(2)])  # fetched meanwhile: not buffered
    assert [m.receipt[:2] for m in s.take(10, 0.0)] == [(1, 0)]
    assert s.nack(m0.receipt, None)  # given back: settled here, no seek
    assert s.unsettled([0]) == 0
    assert s.actions(0.0).seeks == []
    assert s.revoked([0]) == [(0, 0)]  # the next owner starts at the nacked message


def test_records_of_another_client_get_an_id_made_of_the_polybus_topic() -> None:
    decoder = Decoder("orders/eu", "g")  # the Kafka topic is the fitted name
    foreign = record(7, partition=2, key=b"k", headers_=[("trace", b"abc"), ("empty", None)])
    msg = decoder.message(foreign, 1, None)
    assert (msg.id, msg.topic, msg.key, msg.content_type) == (
        "orders/eu/2/7",
        "orders/eu",
        "k",
        None,
    )
    assert msg.headers == {"trace": "abc", "empty": ""}
    assert msg.published_at == datetime.fromtimestamp(STAMP / 1000, UTC)
    other = decoder.message(record(8, partition=2, headers_=[]), 1, None)
    assert other.id != msg.id
    assert other.key is None


def test_content_types_survive_the_record_mapping() -> None:
    decoder = Decoder("t", "g")
    stamp = datetime.now(UTC)
    for ctype, user_headers in [
        (BYTES, {}),  # the usual envelope: one header only
        (BYTES, {"tenant": "acme"}),
        (JSON, {}),
        (None, {}),
    ]:
        env = Envelope("id-1", b"{}", None, user_headers, ctype, stamp)
        encoded = record_headers(env)
        if ctype == BYTES and not user_headers:
            assert encoded == [(headers.ID, "id-1")]
        raw = [(n, v.encode() if isinstance(v, str) else v) for n, v in encoded]
        msg = decoder.message(record(0, headers_=raw), 1, None)
        assert (msg.id, msg.content_type, msg.headers) == ("id-1", ctype, dict(user_headers))


@pytest.mark.parametrize(
    "name", ["orders", "orders.billing.dlq", "a-b_c.D9", "x" * 249, ".hidden", "..."]
)
def test_valid_kafka_names_are_kept(name: str) -> None:
    assert kafka_topic(name) == name


@pytest.mark.parametrize(
    "name", ["orders/eu", "team a", "ünï", "x" * 250, ".", "..", "__consumer_offsets", "__x"]
)
def test_other_names_are_fitted_into_distinct_kafka_names(name: str) -> None:
    fitted = kafka_topic(name)
    assert fitted != name
    assert 1 <= len(fitted) <= 249
    assert fitted not in (".", "..")
    assert not fitted.startswith("__")
    assert set(fitted) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert kafka_topic(name) == fitted  # deterministic: every process agrees
    assert kafka_topic(name + "2") != fitted


def test_names_that_differ_only_in_refused_characters_stay_apart() -> None:
    assert kafka_topic("team a") != kafka_topic("team/a")
    assert kafka_topic(".") != kafka_topic("..")
