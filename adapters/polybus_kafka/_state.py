"""The state one Kafka consumer shares between its fetch thread and the event loop.

Every method takes the lock; none calls the Kafka client. The fetch thread adds
records and applies the seeks, pauses and commits decided here; the event loop takes
messages and settles them.

Contracts:

* Records of a partition are handed out in offset order; any number of a partition's
  records may be unsettled at once (per-key order in key-ordered groups is the core's:
  it hands out one message per key).
* A nack of offset ``o`` drops the partition's buffered records and asks the thread to
  seek back to ``o`` (and, with a delay, to pause the partition until it is due), so
  ``o`` comes back, one attempt higher, before any record of the partition that was
  not handed out yet; messages already handed out stay in flight.
* Commits are contiguous: a partition's position never passes an unsettled offset
  (:class:`~._ledger.PartitionLedger`).
* Acks are queued: :attr:`ConsumerState.acked` is a deque the event loop appends
  receipts to without the lock, and whoever takes the lock next applies them first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from polybus.spi import Message

from ._ledger import PartitionLedger
from ._records import Decoder

log = logging.getLogger("polybus.kafka")

Receipt = tuple[int, int, int]
"""What a message carries to be settled: partition, offset, and the generation of the
partition's assignment it came from. A plain tuple: one is made per message."""

_Fetched = tuple[int, int, int, Any]
"""A buffered record: partition, offset, generation, the native record."""


@dataclass(slots=True)
class _Partition:
    generation: int
    ledger: PartitionLedger = field(default_factory=PartitionLedger)
    rewind_to: int | None = None
    delayed_until: float = 0.0
    leaving: bool = False
    """Being revoked: nothing more is buffered or handed out."""


@dataclass(slots=True)
class Actions:
    """What the fetch thread must do with the client, decided under the lock."""

    seeks: list[tuple[int, int]] = field(default_factory=list)
    commits: list[tuple[int, int]] = field(default_factory=list)
    delayed: set[int] = field(default_factory=set)


class ConsumerState:
    """Buffer, ledgers and queued acks of one consumer (thread-safe, see module doc)."""

    def __init__(self, decoder: Decoder, capacity: int) -> None:
        self.capacity = capacity
        self.lock = threading.Lock()
        self.acked: deque[Receipt] = deque()
        """Receipts acked by the event loop and not applied to the ledgers yet."""
        self._decoder = decoder
        self._where = f"topic={decoder.topic} group={decoder.group}"
        self._parts: dict[int, _Partition] = {}
        self._buffer: deque[_Fetched] = deque()
        """Fetched, not handed out yet: native records, decoded into messages only when
        handed out, in the event loop (the fetch thread does as little Python work as
        possible: two threads running Python at once slow each other down)."""
        self._generation = 0

    # -- fetch thread -----------------------------------------------------------

    def assigned(self, partitions: list[int]) -> None:
        with self.lock:
            self._apply_acks()
            for p in partitions:
                self._generation += 1
                self._parts[p] = _Partition(self._generation)

    def unsettled(self, partitions: list[int]) -> int:
        """How many messages of ``partitions`` are handed out and not settled."""
        with self.lock:
            self._apply_acks()
            return sum(
                len(part.ledger.in_flight)
                for p in partitions
                if (part := self._parts.get(p)) is not None
            )

    def revoking(self, partitions: list[int]) -> None:
        """``partitions`` are about to go: drop their buffered records and hand out
        nothing more of them (their unsettled messages may still be settled)."""
        with self.lock:
            gone = set(partitions)
            self._buffer = deque(f for f in self._buffer if f[0] not in gone)
            for p in partitions:
                part = self._parts.get(p)
                if part is not None:
                    part.leaving = True

    def revoked(self, partitions: list[int]) -> list[tuple[int, int]]:
        """Forget ``partitions``; return the positions still to commit for them.

        Their buffered records are dropped and their in-flight messages become stale:
        a later ack of one is ignored, and the new owner receives it again.
        """
        with self.lock:
            self._apply_acks()
            out = []
            gone = set(partitions)
            floors = self._floors()
            for p in partitions:
                part = self._parts.pop(p, None)
                if part is not None:
                    due = part.ledger.commit_due(floors.get(p))
                    if due is not None:
                        out.append((p, due))
            self._buffer = deque(f for f in self._buffer if f[0] not in gone)
            return out

    def room(self) -> int:
        return self.capacity - len(self._buffer)  # a len() needs no lock

    def add(self, records: list[Any]) -> int:
        """Buffer the records to hand out; return how many were buffered."""
        added = 0
        with self.lock:
            parts = self._parts
            append = self._buffer.append
            for rec in records:
                p = rec.partition()
                part = parts.get(p)
                if part is None or part.leaving or part.rewind_to is not None:
                    continue  # not ours any more, or fetched before a pending seek
                offset = rec.offset()
                if not part.ledger.admits(offset):
                    continue  # in flight or acked: a re-fetch after a seek
                append((p, offset, part.generation, rec))
                added += 1
        return added

    def actions(self, now: float) -> Actions:
        """Seeks to run (clearing them), positions to commit, partitions to keep paused."""
        out = Actions()
        with self.lock:
            self._apply_acks()
            floors = self._floors()
            for p, part in self._parts.items():
                if part.rewind_to is not None and not part.leaving:
                    out.seeks.append((p, part.rewind_to))
                    part.rewind_to = None
                due = part.ledger.commit_due(floors.get(p))
                if due is not None:
                    out.commits.append((p, due))
                if part.delayed_until > now:
                    out.delayed.add(p)
        return out

    def committed(self, commits: list[tuple[int, int]]) -> None:
        with self.lock:
            for p, pos in commits:
                part = self._parts.get(p)
                if part is not None:
                    part.ledger.committed = pos

    def commit_failed(self, partitions: list[int]) -> None:
        with self.lock:
            for p in partitions:
                part = self._parts.get(p)
                if part is not None:
                    part.ledger.committed = None

    def positions(self) -> list[tuple[int, int]]:
        """Every position worth committing now (for close)."""
        with self.lock:
            self._apply_acks()
            out = []
            floors = self._floors()
            for p, part in self._parts.items():
                due = part.ledger.commit_due(floors.get(p))
                if due is not None:
                    out.append((p, due))
            return out

    # -- event loop ---------------------------------------------------------------

    def take(self, max_messages: int, now: float) -> list[Message]:
        """Up to ``max_messages`` buffered records as messages, in offset order per
        partition; records of a partition waiting for a seek or a delay stay."""
        out: list[Message] = []
        with self.lock:
            self._apply_acks()
            buffer = self._buffer
            if not buffer:
                return out
            parts = self._parts
            decode = self._decoder.message
            kept: deque[_Fetched] | None = None
            popleft = buffer.popleft
            append = out.append
            while buffer and len(out) < max_messages:
                fetched = popleft()
                p, offset, generation, rec = fetched
                part = parts.get(p)
                if part is None or part.generation != generation:
                    continue
                if part.delayed_until > now or part.rewind_to is not None:
                    if kept is None:
                        kept = deque()
                    kept.append(fetched)
                    continue
                append(decode(rec, part.ledger.hand_out(offset), (p, offset, generation)))
            if kept:
                kept.extend(buffer)
                self._buffer = kept
        return out

    def nack(self, receipt: Receipt, delay: float | None) -> bool:
        """Give the message back; the partition rewinds to it (after ``delay``). False
        if the message is not in flight here (its partition was revoked)."""
        p, offset, _ = receipt
        with self.lock:
            self._apply_acks()
            part = self._live(receipt)
            if part is None or not part.ledger.nack(offset):
                return False
            if part.leaving:
                return True  # the partition's next owner delivers it again
            dropped = [f[1] for f in self._buffer if f[0] == p]
            if dropped:
                self._buffer = deque(f for f in self._buffer if f[0] != p)
            target = part.ledger.rewind(dropped)
            if part.rewind_to is None or part.rewind_to > target:
                part.rewind_to = target
            if delay:
                part.delayed_until = max(part.delayed_until, time.monotonic() + delay)
            return True

    def _apply_acks(self) -> None:
        """Apply the queued acks to the ledgers (lock held)."""
        acked = self.acked
        if not acked:
            return
        parts = self._parts
        popleft = acked.popleft
        while acked:
            receipt = popleft()
            p, offset, generation = receipt
            part = parts.get(p)
            if part is None or part.generation != generation or not part.ledger.ack(offset):
                log.debug(
                    "ack ignored (partition revoked) %s partition=%d offset=%d",
                    self._where,
                    p,
                    offset,
                )

    def _live(self, receipt: Receipt) -> _Partition | None:
        part = self._parts.get(receipt[0])
        if part is None or part.generation != receipt[2]:
            return None
        return part

    def _floors(self) -> dict[int, int]:
        """Per partition, the lowest offset buffered and not handed out (lock held)."""
        floors: dict[int, int] = {}
        for p, offset, _, _ in self._buffer:
            low = floors.get(p)
            if low is None or offset < low:
                floors[p] = offset
        return floors

    def partitions(self) -> frozenset[int]:
        """The partitions assigned to this consumer now."""
        with self.lock:
            return frozenset(self._parts)

    def buffered(self) -> int:
        with self.lock:
            return len(self._buffer)
