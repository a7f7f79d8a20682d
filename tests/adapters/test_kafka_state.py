"""The Kafka consumer's shared state and record mapping: pure bookkeeping, no broker.

Records are confluent-kafka's own ``Message`` objects (its constructor is meant for
tests); what the broker does with them is covered by test_kafka_adapter.py and the
conformance suite.
"""

from __future__ import annotations

from datetime import UTC, datetime

from confluent_kafka import Message as Record

from polybus import headers as h
from polybus._codec import BYTES, JSON
from polybus._message import NO_HEADERS, make_envelope
from polybus_kafka._records import Decoder, record_headers, record_key
from polybus_kafka._state import ConsumerState

STAMP = 1_764_400_000_000


def record(
    offset: int,
    *,
    partition: int = 0,
    key: bytes | None = None,
    headers: list[tuple[str, bytes | None]] | None = None,
) -> Record:
    return Record(
        topic="t",
        partition=partition,
        offset=offset,
        key=key,
        value=b"v%d" % offset,
        headers=[(h.ID, b"id-%d" % offset)] if headers is None else headers,
        timestamp=(1, STAMP),
    )


def state(*partitions: int) -> ConsumerState:
    out = ConsumerState("t", "g", capacity=100)
    out.assigned(list(partitions) or [0])
    return out


def test_queued_acks_reach_the_ledger_before_the_commit() -> None:
    s = state()
    s.add([record(o) for o in range(3)])
    taken = s.take(10, 0.0)
    assert [m.id for m in taken] == ["id-0", "id-1", "id-2"]
    assert [m.delivery_attempt for m in taken] == [1, 1, 1]
    s.acked.extend([taken[0].receipt, taken[1].receipt])  # what ack_many does
    assert s.actions(0.0).commits == [(0, 2)]  # offset 2 is still in flight
    s.acked.append(taken[2].receipt)
    assert s.positions() == [(0, 3)]


def test_a_key_waits_for_its_unsettled_message_and_an_ack_frees_it() -> None:
    s = state()
    s.add([record(0, key=b"k"), record(1, key=b"k"), record(2, key=b"other")])
    first = s.take(10, 0.0)
    assert [m.id for m in first] == ["id-0", "id-2"]
    assert s.holding  # id-1 waits behind id-0
    assert s.take(10, 0.0) == []
    s.acked.append(first[0].receipt)
    second = s.take(10, 0.0)
    assert [(m.id, m.key) for m in second] == [("id-1", "k")]
    assert not s.holding


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


def test_records_of_another_client_get_a_stable_id_and_no_content_type() -> None:
    decoder = Decoder("t", "g")
    foreign = record(7, partition=2, key=b"k", headers=[("trace", b"abc")])
    msg = decoder.message(foreign, record_key(foreign), 1, None)
    assert (msg.id, msg.key, msg.content_type) == ("t/2/7", "k", None)
    assert msg.headers == {"trace": "abc"}
    assert msg.published_at == datetime.fromtimestamp(STAMP / 1000, UTC)


def test_content_types_survive_the_record_mapping() -> None:
    decoder = Decoder("t", "g")
    stamp = datetime.now(UTC)
    for ctype, user_headers in [
        (BYTES, NO_HEADERS),  # the usual envelope: one header only
        (BYTES, {"tenant": "acme"}),
        (JSON, NO_HEADERS),
        (None, NO_HEADERS),
    ]:
        env = make_envelope("id-1", b"{}", None, user_headers, ctype, stamp)
        headers = record_headers(env)
        if ctype == BYTES and not user_headers:
            assert headers == [(h.ID, "id-1")]
        encoded = [(n, v.encode() if isinstance(v, str) else v) for n, v in headers]
        rec = record(0, headers=encoded)
        msg = decoder.message(rec, None, 1, None)
        assert (msg.id, msg.content_type, msg.headers) == ("id-1", ctype, dict(user_headers))
