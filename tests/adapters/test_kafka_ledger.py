"""The Kafka offset ledger: pure bookkeeping, no broker needed."""

from __future__ import annotations

from polybus_kafka._ledger import PartitionLedger


def test_commits_only_up_to_the_first_unsettled_offset() -> None:
    ledger = PartitionLedger()
    for offset in (10, 11, 12):
        assert ledger.hand_out(offset) == 1
    assert ledger.ack(12)
    assert ledger.position() == 10
    assert ledger.ack(10)
    assert ledger.position() == 11
    assert ledger.ack(11)
    assert ledger.commit_due() == 13


def test_nack_holds_the_position_and_counts_attempts() -> None:
    ledger = PartitionLedger()
    ledger.hand_out(5)
    ledger.hand_out(6)
    assert ledger.nack(5)
    assert ledger.rewind([]) == 5
    assert ledger.ack(6)
    assert ledger.position() == 5
    assert ledger.admits(5)
    assert not ledger.admits(6)  # acked: a re-fetch after the seek is skipped
    assert ledger.hand_out(5) == 2
    assert ledger.ack(5)
    assert ledger.position() == 7


def test_dropped_buffered_offsets_are_fetched_again() -> None:
    ledger = PartitionLedger()
    ledger.hand_out(1)
    ledger.hand_out(3)  # 2 was fetched, not handed out yet, then dropped by the rewind
    ledger.nack(3)
    assert ledger.rewind([2]) == 2
    assert ledger.admits(2)
    assert ledger.position() == 1
    assert ledger.hand_out(2) == 1


def test_buffered_floor_limits_the_commit() -> None:
    ledger = PartitionLedger()
    ledger.hand_out(8)
    ledger.ack(8)
    assert ledger.commit_due(floor=7) == 7
    ledger.committed = 7
    assert ledger.commit_due(floor=7) is None


def test_settling_an_unknown_offset_is_refused() -> None:
    ledger = PartitionLedger()
    assert not ledger.ack(3)
    assert not ledger.nack(3)
