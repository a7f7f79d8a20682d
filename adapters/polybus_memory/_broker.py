"""The in-process broker behind ``memory://``: topics, groups, lanes, no I/O.

Each group keeps its pending messages in *lanes*: one lane per key, plus one shared
lane for messages without a key. A keyed lane is locked while one of its messages is
in flight (or waiting out a nack delay), which is what gives per-key order even with
several competing consumers. Ready lanes are taken in publish order (a heap of head
sequence numbers). All state sits behind one lock so that brokers may be shared by
event loops in several threads (the sync facade runs its own).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from polybus.spi import Envelope

_seq = itertools.count()


@dataclass(slots=True, eq=False)
class Entry:
    """One message in one group."""

    seq: int
    envelope: Envelope
    topic: str
    deliveries: int = 0
    not_before: float = 0.0


@dataclass(slots=True, eq=False)
class Group:
    name: str
    max_deliveries: int | None = None
    free: deque[Entry] = field(default_factory=deque)
    keyed: dict[str, deque[Entry]] = field(default_factory=dict)
    ready: list[tuple[int, str]] = field(default_factory=list)
    locked: set[str] = field(default_factory=set)
    delayed: list[tuple[float, int, Entry]] = field(default_factory=list)
    waiters: list[Callable[[], None]] = field(default_factory=list)

    def push(self, entry: Entry) -> None:
        key = entry.envelope.key
        if key is None:
            self.free.append(entry)
            return
        lane = self.keyed.get(key)
        if lane is None:
            lane = self.keyed[key] = deque()
        lane.append(entry)
        if len(lane) == 1 and key not in self.locked:
            heapq.heappush(self.ready, (entry.seq, key))

    def give_back(self, entry: Entry) -> None:
        """Put an in-flight entry back at the head of its lane and unlock the lane."""
        key = entry.envelope.key
        if key is None:
            self.free.appendleft(entry)
            return
        lane = self.keyed.setdefault(key, deque())
        lane.appendleft(entry)
        self.locked.discard(key)
        heapq.heappush(self.ready, (entry.seq, key))

    def release(self, entry: Entry) -> None:
        """An in-flight entry is settled for good: unlock its lane."""
        key = entry.envelope.key
        if key is None:
            return
        self.locked.discard(key)
        lane = self.keyed.get(key)
        if lane:
            heapq.heappush(self.ready, (lane[0].seq, key))
        elif lane is not None:
            del self.keyed[key]

    def delay(self, entry: Entry, seconds: float) -> None:
        """Keep ``entry`` (and its key's lane, still locked) away for ``seconds``."""
        entry.not_before = time.monotonic() + seconds
        heapq.heappush(self.delayed, (entry.not_before, entry.seq, entry))

    def promote(self, now: float) -> None:
        while self.delayed and self.delayed[0][0] <= now:
            _, _, entry = heapq.heappop(self.delayed)
            self.give_back(entry)

    def take(self, limit: int) -> list[Entry]:
        """Up to ``limit`` deliverable entries, oldest first; keyed lanes get locked."""
        out: list[Entry] = []
        free, ready = self.free, self.ready
        while len(out) < limit:
            if ready and (not free or ready[0][0] < free[0].seq):
                _, key = heapq.heappop(ready)
                lane = self.keyed.get(key)
                if not lane or key in self.locked:
                    continue  # stale heap item
                entry = lane.popleft()
                if not lane:
                    del self.keyed[key]
                self.locked.add(key)
            elif free:
                entry = free.popleft()
            else:
                break
            entry.deliveries += 1
            out.append(entry)
        return out

    def next_due(self) -> float | None:
        return self.delayed[0][0] if self.delayed else None

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for wake in waiters:
            wake()


class Broker:
    """One named in-process broker. Thread-safe; messages live as long as the process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.topics: dict[str, dict[str, Group]] = {}

    def ensure_topic(self, topic: str) -> None:
        with self.lock:
            self.topics.setdefault(topic, {})

    def ensure_group(self, topic: str, group: str, max_deliveries: int | None) -> Group:
        with self.lock:
            groups = self.topics.setdefault(topic, {})
            found = groups.get(group)
            if found is None:
                found = groups[group] = Group(group, max_deliveries)
            elif max_deliveries is not None:
                found.max_deliveries = max_deliveries
            return found

    def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        with self.lock:
            groups = self.topics.setdefault(topic, {})
            if not groups:
                return  # no group: nobody subscribed, like a pub/sub topic
            for env in envelopes:
                seq = next(_seq)
                for group in groups.values():
                    group.push(Entry(seq, env, topic))
            for group in groups.values():
                group.wake()


_brokers: dict[str, Broker] = {}
_brokers_lock = threading.Lock()


def broker(name: str) -> Broker:
    """The process-wide broker called ``name`` (``""`` is the default one)."""
    with _brokers_lock:
        found = _brokers.get(name)
        if found is None:
            found = _brokers[name] = Broker(name)
        return found
