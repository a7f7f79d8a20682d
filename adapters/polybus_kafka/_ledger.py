"""Offset bookkeeping of one assigned partition: pure, no client calls, no locking.

Kafka commits a position, not single messages: committing ``n`` says every offset
below ``n`` is done. polybus acks messages one by one and out of order, so the ledger
commits only up to the first offset that is still unsettled.

Vocabulary, for one partition of one consumer:

* handed out: given to the application at least once (``delivered_upto`` is one past
  the highest such offset);
* in flight: handed out and not settled yet;
* needed: nacked (or fetched and dropped by a nack's rewind), waiting to be handed
  out again; the fetcher seeks back to the lowest needed offset.

A fetched record is admitted (handed out) when it was never handed out, or when it is
needed; a record at an offset that is in flight or already acked is a re-fetch caused
by a seek and is skipped. Offsets Kafka never returns (transaction markers, compacted
records) are simply covered by ``delivered_upto``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class PartitionLedger:
    delivered_upto: int | None = None
    in_flight: dict[int, int] = field(default_factory=dict)
    """offset -> the attempt number it was handed out with."""
    needed: set[int] = field(default_factory=set)
    retries: dict[int, int] = field(default_factory=dict)
    """offset -> deliveries so far, for nacked offsets waiting to be handed out again
    (an offset missing here was never handed out: its next delivery is the first)."""
    committed: int | None = None
    """The last position sent to the broker (None: nothing sent by this consumer)."""

    def admits(self, offset: int) -> bool:
        """True if a fetched record at ``offset`` must be handed out."""
        return (
            self.delivered_upto is None or offset >= self.delivered_upto or (offset in self.needed)
        )

    def hand_out(self, offset: int) -> int:
        """Record that ``offset`` goes to the application; return its delivery attempt."""
        attempt = 1
        if self.needed:
            self.needed.discard(offset)
            attempt += self.retries.pop(offset, 0)
        self.in_flight[offset] = attempt
        if self.delivered_upto is None or offset >= self.delivered_upto:
            self.delivered_upto = offset + 1
        return attempt

    def ack(self, offset: int) -> bool:
        """Settle ``offset`` for good; False if it was not in flight here."""
        return self.in_flight.pop(offset, None) is not None

    def nack(self, offset: int) -> bool:
        """Give ``offset`` back for redelivery; False if it was not in flight here."""
        attempt = self.in_flight.pop(offset, None)
        if attempt is None:
            return False
        self.retries[offset] = attempt
        self.needed.add(offset)
        return True

    def position(self, floor: int | None = None) -> int | None:
        """The position safe to commit: every offset below it is settled. ``floor`` is
        the lowest offset fetched and not handed out yet (held back behind its key)."""
        if self.delivered_upto is None:
            return None
        low = self.delivered_upto if floor is None else min(floor, self.delivered_upto)
        if self.in_flight:
            low = min(low, min(self.in_flight))
        if self.needed:
            low = min(low, min(self.needed))
        return low

    def commit_due(self, floor: int | None = None) -> int | None:
        """The position to commit now, or None if it has not moved since the last one."""
        pos = self.position(floor)
        if pos is None or pos == self.committed:
            return None
        return pos

    def rewind(self, dropped: list[int]) -> int:
        """Where the fetcher must seek after a nack, given the offsets of this partition
        that were fetched, not handed out, and are now dropped: they become needed too
        (a seek to the lowest needed offset fetches every one of them again)."""
        self.needed.update(dropped)
        return min(self.needed)
