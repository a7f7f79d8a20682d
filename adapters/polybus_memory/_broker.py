"""The in-process broker behind ``memory://``: topics, groups, deliveries; no I/O.

A group keeps its messages in publish order. In a key-ordered group each key has a
*lane* that is locked while one of its messages is out (delivered and unsettled, or
waiting out a nack delay), like SQS FIFO message groups: no consumer of the group
gets a key's next message early, and a nacked message goes back to the head of its
lane. Unordered groups hand messages to any consumer in publish order. With a
visibility timeout an unsettled message not extended in time goes back to the group
(as a consumer that died would leave it). All state sits behind one lock, so a broker
may be shared by event loops in several threads (the sync facade runs its own).
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from polybus.errors import BrokerUnavailable, ConfigError
from polybus.spi import Envelope, Ordering

_seq = itertools.count()


@dataclass(slots=True, eq=False)
class Entry:
    """One message in one group."""

    seq: int
    envelope: Envelope
    deliveries: int = 0
    token: int = 0
    """Grows with every delivery: a settlement carrying an older token is stale (the
    message went back meanwhile) and is ignored."""
    holder: object = None
    """The consumer the message is out with, if any."""
    lease_until: float = math.inf


@dataclass(slots=True, eq=False)
class Group:
    name: str
    ordering: Ordering
    visibility_timeout: float | None = None
    key_locks: bool = True
    free: deque[Entry] = field(default_factory=deque)
    keyed: dict[str, deque[Entry]] = field(default_factory=dict)
    ready: list[tuple[int, str]] = field(default_factory=list)
    locked: set[str] = field(default_factory=set)
    delayed: list[tuple[float, int, Entry]] = field(default_factory=list)
    out: dict[int, Entry] = field(default_factory=dict)
    """Entries out with a consumer, by ``id``."""
    waiters: list[Callable[[], None]] = field(default_factory=list)
    lanes: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        # keys get lanes only in key-ordered groups with key locks; fixed at creation
        self.lanes = self.ordering is Ordering.KEY and self.key_locks

    def _lane_key(self, entry: Entry) -> str | None:
        return entry.envelope.key if self.lanes else None

    def push(self, entry: Entry) -> None:
        key = self._lane_key(entry)
        if key is None:
            self.free.append(entry)
            return
        lane = self.keyed.get(key)
        if lane is None:
            lane = self.keyed[key] = deque()
        lane.append(entry)
        if len(lane) == 1 and key not in self.locked:
            heapq.heappush(self.ready, (entry.seq, key))

    def _back(self, entry: Entry) -> None:
        """Put an entry that was out back at the head of its lane; unlock the lane."""
        key = self._lane_key(entry)
        if key is None:
            self.free.appendleft(entry)
            return
        self.keyed.setdefault(key, deque()).appendleft(entry)
        self.locked.discard(key)
        heapq.heappush(self.ready, (entry.seq, key))

    def _unlock(self, entry: Entry) -> None:
        key = self._lane_key(entry)
        if key is None:
            return
        self.locked.discard(key)
        lane = self.keyed.get(key)
        if lane:
            heapq.heappush(self.ready, (lane[0].seq, key))
        elif lane is not None:
            del self.keyed[key]

    def _held(self, entry: Entry, token: int, holder: object) -> bool:
        return entry.token == token and entry.holder is holder and holder is not None

    def settle(self, entry: Entry, token: int, holder: object) -> bool:
        """Acked: gone for good. True if a lane was unlocked (a waiter may go on now);
        a stale settlement is ignored."""
        if entry.token != token or entry.holder is not holder or holder is None:
            return False
        entry.holder = None
        self.out.pop(id(entry), None)
        if self.lanes and entry.envelope.key is not None:
            self._unlock(entry)
            return True
        return False

    def give_back(self, entry: Entry, token: int, holder: object, delay: float, now: float) -> bool:
        """Nacked: back at once, or after ``delay`` (its lane stays locked meanwhile)."""
        if not self._held(entry, token, holder):
            return False
        entry.holder = None
        self.out.pop(id(entry), None)
        if delay > 0:
            heapq.heappush(self.delayed, (now + delay, entry.seq, entry))
        else:
            self._back(entry)
        return True

    def extend(self, entry: Entry, token: int, holder: object, now: float) -> None:
        if self._held(entry, token, holder) and self.visibility_timeout is not None:
            entry.lease_until = now + self.visibility_timeout

    def release(self, holder: object) -> None:
        """Every entry out with ``holder`` goes back (a consumer closing)."""
        mine = [e for e in self.out.values() if e.holder is holder]
        for entry in sorted(mine, key=lambda e: e.seq, reverse=True):
            entry.holder = None
            del self.out[id(entry)]
            self._back(entry)

    def promote(self, now: float) -> None:
        while self.delayed and self.delayed[0][0] <= now:
            _, _, entry = heapq.heappop(self.delayed)
            self._back(entry)
        if self.visibility_timeout is not None and self.out:
            for entry in [e for e in self.out.values() if e.lease_until <= now]:
                entry.holder = None  # the lease ran out: the message goes back
                del self.out[id(entry)]
                self._back(entry)

    def take(self, limit: int, now: float, holder: object) -> list[Entry]:
        """Up to ``limit`` deliverable entries, oldest first; keyed lanes get locked."""
        self.promote(now)
        out: list[Entry] = []
        free, ready = self.free, self.ready
        lease = self.visibility_timeout
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
            entry.token += 1
            entry.holder = holder
            if lease is not None:
                entry.lease_until = now + lease
            self.out[id(entry)] = entry
            out.append(entry)
        return out

    def unsettled(self) -> list[Entry]:
        """Every entry not settled yet: waiting, delayed or out with a consumer."""
        lanes = [e for lane in self.keyed.values() for e in lane]
        return [*self.free, *lanes, *(e for _, _, e in self.delayed), *self.out.values()]

    def next_due(self) -> float | None:
        due = [self.delayed[0][0]] if self.delayed else []
        if self.visibility_timeout is not None and self.out:
            due.append(min(e.lease_until for e in self.out.values()))
        return min(due) if due else None

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for wake in waiters:
            wake()


class Broker:
    """One in-process broker. Thread-safe; messages live as long as the broker."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.topics: dict[str, dict[str, Group]] = {}
        self.down = False
        """True during a simulated outage (:meth:`outage`)."""

    def outage(self, down: bool = True) -> None:
        """Make the broker unreachable (``down``) or reachable again, as a network cut
        would: while down every call fails with BrokerUnavailable (a publish with a
        retryable PublishError), and every unsettled message goes back to its group, as
        a broker does with a lost connection's deliveries (settling them later is
        ignored). For testing how code rides out outages."""
        with self.lock:
            self.down = down
            for groups in self.topics.values():
                for group in groups.values():
                    if down:
                        for entry in sorted(group.out.values(), key=lambda e: e.seq, reverse=True):
                            entry.holder = None
                            group._back(entry)
                        group.out.clear()
                    group.wake()

    def check(self) -> None:
        """Raise BrokerUnavailable during an outage (lock held or not)."""
        if self.down:
            raise BrokerUnavailable(f"memory://{self.name}: the broker is unavailable (outage)")

    def ensure_topic(self, topic: str) -> None:
        with self.lock:
            self.topics.setdefault(topic, {})

    def ensure_group(
        self,
        topic: str,
        group: str,
        ordering: Ordering,
        visibility_timeout: float | None,
        key_locks: bool = True,
    ) -> Group:
        with self.lock:
            groups = self.topics.setdefault(topic, {})
            found = groups.get(group)
            if found is None:
                found = groups[group] = Group(group, ordering, visibility_timeout, key_locks)
            elif found.ordering is not ordering:
                raise ConfigError(
                    "ordering",
                    f"memory: group {group!r} of topic {topic!r} exists with "
                    f"ordering={found.ordering.value!r}, not {ordering.value!r} (the ordering "
                    "of a group is fixed when it is created; use a new group name)",
                )
            return found

    def delete_group(self, topic: str, group: str) -> None:
        with self.lock:
            found = self.topics.get(topic, {}).pop(group, None)
            if found is not None:
                found.wake()  # a consumer still waiting sees nothing more

    def group(self, topic: str, group: str) -> Group | None:
        with self.lock:
            return self.topics.get(topic, {}).get(group)

    def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        with self.lock:
            groups = self.topics.setdefault(topic, {})
            if not groups:
                return  # no group: nobody subscribed, like a pub/sub topic
            for env in envelopes:
                seq = next(_seq)
                for group in groups.values():
                    group.push(Entry(seq, env))
            for group in groups.values():
                group.wake()


_shared: dict[str, Broker] = {}
_shared_lock = threading.Lock()


def shared(name: str) -> Broker:
    """The process-wide broker called ``name``: every ``memory://NAME`` bus reaches it."""
    with _shared_lock:
        found = _shared.get(name)
        if found is None:
            found = _shared[name] = Broker(name)
        return found
