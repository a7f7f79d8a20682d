"""The state one Kafka consumer shares between its fetch thread and the event loop.

Every method takes the lock; none calls the Kafka client. The fetch thread adds
records and applies the resulting seeks, pauses and commits; the event loop takes
messages and settles them. Per-partition order: records of a partition are handed out
in offset order, except that a record whose key has a message in flight stays in the
buffer until that message is settled (per-key order even for a consumer that settles
out of order: a key's next message is never handed out while an earlier one is
unsettled). A nack of offset ``o`` drops the partition's buffered records and asks the
thread to seek back to ``o``, so ``o`` comes again before anything after it; messages
of other keys already handed out stay in flight.

Acks are the hot path: the event loop appends the receipt to :attr:`ConsumerState.acked`
(a deque, safe to append from any thread without the lock) and whoever takes the lock
next (handing out, nacking, or the fetch thread computing commits) applies every
queued ack first. So an ack costs one append, and the ledgers still see every ack
before anything depends on them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from polybus._message import Message

from ._ledger import PartitionLedger
from ._records import Decoder, record_key

log = logging.getLogger("polybus.kafka")

Receipt = tuple[int, int, int, "str | None"]
"""What a message carries to be settled: partition, offset, the generation of the
partition's assignment it came from, key. A plain tuple: one is made per message."""

_Fetched = tuple[int, int, int, Any]
"""A buffered record: partition, offset, generation, the native record."""


@dataclass(slots=True)
class _Partition:
    generation: int
    ledger: PartitionLedger = field(default_factory=PartitionLedger)
    rewind_to: int | None = None
    delayed_until: float = 0.0
    busy: set[str] = field(default_factory=set)
    """Keys with a message in flight."""


@dataclass(slots=True)
class Actions:
    """What the fetch thread must do with the client, decided under the lock."""

    seeks: list[tuple[int, int]] = field(default_factory=list)
    commits: list[tuple[int, int]] = field(default_factory=list)
    delayed: set[int] = field(default_factory=set)


class ConsumerState:
    def __init__(self, topic: str, group: str, capacity: int) -> None:
        self.topic = topic
        self.group = group
        self.capacity = capacity
        self.lock = threading.Lock()
        self.acked: deque[Receipt] = deque()
        """Receipts acked by the event loop and not applied to the ledgers yet."""
        self.holding = False
        """True while a fetched record waits behind an unsettled message of its key (an
        ack may free it, so the consumer wakes its fetch call)."""
        self._parts: dict[int, _Partition] = {}
        self._buffer: deque[_Fetched] = deque()
        """Fetched, not handed out yet: native records, decoded into messages only when
        handed out, in the event loop (the fetch thread does as little Python work as
        possible: two threads running Python at once slow each other down)."""
        self._decoder = Decoder(topic, group)
        self._generation = 0

    # -- fetch thread -----------------------------------------------------------

    def assigned(self, partitions: list[int]) -> None:
        with self.lock:
            self._apply_acks()
            for p in partitions:
                self._generation += 1
                self._parts[p] = _Partition(self._generation)

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
        """Buffer the admitted records; return how many were buffered."""
        added = 0
        with self.lock:
            parts = self._parts
            append = self._buffer.append
            for rec in records:
                p = rec.partition()
                part = parts.get(p)
                if part is None or part.rewind_to is not None:
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
                if part.rewind_to is not None:
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
        out: list[Message] = []
        with self.lock:
            self._apply_acks()
            buffer = self._buffer
            if not buffer:
                return out
            parts = self._parts
            decode = self._decoder.message
            kept: deque[_Fetched] = deque()
            holding = False
            popleft = buffer.popleft
            append = out.append
            while buffer and len(out) < max_messages:
                fetched = popleft()
                p, offset, generation, rec = fetched
                part = parts.get(p)
                if part is None or part.generation != generation:
                    continue
                if part.delayed_until > now or part.rewind_to is not None:
                    kept.append(fetched)
                    continue
                key = record_key(rec)
                if key is not None:
                    busy = part.busy
                    if key in busy:
                        kept.append(fetched)
                        holding = True
                        continue
                    busy.add(key)
                append(decode(rec, key, part.ledger.hand_out(offset), (p, offset, generation, key)))
            if kept:
                kept.extend(buffer)
                self._buffer = kept
            self.holding = holding
        return out

    def nack(self, receipt: Receipt, delay: float | None) -> bool:
        """Give the message back; the partition rewinds to it (after ``delay``)."""
        p, offset, _, key = receipt
        with self.lock:
            self._apply_acks()
            part = self._live(receipt)
            if part is None or not part.ledger.nack(offset):
                return False
            if key is not None:
                part.busy.discard(key)
            dropped = [f[1] for f in self._buffer if f[0] == p]
            if dropped:
                self._buffer = deque(f for f in self._buffer if f[0] != p)
            target = part.ledger.rewind(dropped)
            part.rewind_to = target if part.rewind_to is None else min(part.rewind_to, target)
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
            p, offset, generation, key = receipt
            part = parts.get(p)
            if part is None or part.generation != generation or not part.ledger.ack(offset):
                log.debug(
                    "ack ignored (partition revoked) topic=%s group=%s partition=%d offset=%d",
                    self.topic,
                    self.group,
                    p,
                    offset,
                )
                continue
            if key is not None:
                part.busy.discard(key)

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
