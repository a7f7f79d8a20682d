"""One consumer of a group: a Redis consumer of the group's consumer group.

receive claims the entries it nacked once their delay is over, then (every ``block``)
entries idle for ``claim_idle`` (a dead consumer's, or given back), then reads new ones
(XREADGROUP on a connection of its own); delivery counts are read in the script that
claims. ack is XACK; extend an XCLAIM JUSTID to itself; nack moves the entry to
``polybus:returned`` with its idle time set so that it is claimable ``delay`` later;
close moves every entry still pending there, claimable at once, and deletes the name.
extend and nack move only entries this consumer still owns. See README.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from polybus.errors import PolybusError
from polybus.spi import Consumer, GroupSpec, Message

from . import _errors, _settings, _wire
from ._settings import RedisSettings

__all__ = ["RETURNED", "RedisConsumer", "Scripts"]

log = logging.getLogger("polybus.redis")

RETURNED = "polybus:returned"
"""The consumer name that holds entries given back (nacked, or left by a closed
consumer) until a live consumer claims them. No client reads as it."""
DUE_MARGIN = 0.005
"""Seconds past a nack delay after which this consumer claims the entry back (the
server's idle times are whole milliseconds)."""

_CLAIM = """
local key, group, me, idle = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local cursor, entries = '0-0', nil
if ARGV[4] == 'auto' then
  local r = redis.call('XAUTOCLAIM', key, group, me, idle, ARGV[5], 'COUNT', ARGV[6])
  cursor, entries = r[1], r[2]
else
  entries = redis.call('XCLAIM', key, group, me, idle, unpack(ARGV, 5))
end
local counts = {}
for i, e in ipairs(entries) do
  counts[i] = redis.call('XPENDING', key, group, e[1], e[1], 1)[1][4]
end
return {cursor, entries, counts}
"""
_MOVE = """
local key, group, from = KEYS[1], ARGV[1], ARGV[2]
local args = {key, group, ARGV[3], 0}
for i = 5, #ARGV do
  if #redis.call('XPENDING', key, group, ARGV[i], ARGV[i], 1, from) == 1 then
    args[#args + 1] = ARGV[i]
  end
end
if #args == 4 then return 0 end
args[#args + 1] = 'IDLE'; args[#args + 1] = ARGV[4]; args[#args + 1] = 'JUSTID'
return #redis.call('XCLAIM', unpack(args))
"""
_RELEASE = """
local key, group, me = KEYS[1], ARGV[1], ARGV[2]
local start, moved = '-', 0
while true do
  local p = redis.call('XPENDING', key, group, start, '+', 100, me)
  if #p == 0 then break end
  local args = {key, group, ARGV[3], 0}
  for _, e in ipairs(p) do args[#args + 1] = e[1] end
  start = '(' .. p[#p][1]
  args[#args + 1] = 'IDLE'; args[#args + 1] = ARGV[4]; args[#args + 1] = 'JUSTID'
  moved = moved + #redis.call('XCLAIM', unpack(args))
end
redis.call('XGROUP', 'DELCONSUMER', key, group, me)
return moved
"""
_SWEEP = """
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    n = n + 1
  end
end
return n
"""


class Scripts:
    """The Lua scripts of the consumers (atomic on the server), loaded on first use."""

    def __init__(self, client: Redis) -> None:
        self.claim: AsyncScript = client.register_script(_CLAIM)
        self.move: AsyncScript = client.register_script(_MOVE)
        self.release: AsyncScript = client.register_script(_RELEASE)
        self.sweep: AsyncScript = client.register_script(_SWEEP)


class RedisConsumer(Consumer):
    """Not thread-safe: used from the event loop of its adapter."""

    exclusive_keys = False

    def __init__(
        self, shared: Redis, scripts: Scripts, settings: RedisSettings, spec: GroupSpec
    ) -> None:
        self.shared = shared
        self.scripts = scripts
        self.settings = settings
        self.spec = spec
        self.key = settings.key_prefix + spec.topic
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease: float = settings.claim_idle
        self._idle_ms = int(settings.claim_idle * 1000)
        self._reader: Redis | None = None
        self._reader_id: int | None = None
        self._parked: dict[str, float] = {}
        """Entries this consumer nacked -> when (monotonic) it claims them back."""
        self._cursor = "0-0"
        self._next_scan = 0.0
        self._blocking = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisConsumer {self.key!r} group={self.spec.group!r} name={self.name!r}>"

    async def open(self) -> None:
        """Connect the reading connection and delete consumer names of the group that
        hold nothing and were not seen for ``2 * (claim_idle + block)`` (dead ones)."""
        self._reader = reader = _settings.client(self.settings, dedicated=True)
        s = self.settings
        stale = int(2000 * (s.claim_idle + s.block))
        async with _errors.bounded(s.connect_timeout + s.publish_timeout, f"opening {self!r}"):
            self._reader_id = int(await reader.client_id())
            await self.scripts.sweep([self.key], [self.spec.group, stale], reader)

    async def receive(self, max_messages: int) -> Sequence[Message]:
        reader = self._reader
        if reader is None or self._closed:
            raise PolybusError(f"{self!r} is not open")
        bound = self.settings.block + self.settings.publish_timeout
        while True:
            async with _errors.bounded(bound, f"reading {self.key!r}"):
                batch = await self._claim_due(reader, max_messages)
                if len(batch) < max_messages and time.monotonic() >= self._next_scan:
                    batch += await self._scan(reader, max_messages - len(batch))
                if len(batch) < max_messages:
                    batch += await self._read(reader, max_messages - len(batch), not batch)
            if batch:
                return batch

    async def _claim_due(self, reader: Redis, limit: int) -> list[Message]:
        now = time.monotonic()
        due = [entry for entry, at in self._parked.items() if at <= now][:limit]
        if not due:
            return []
        for entry in due:
            del self._parked[entry]  # claimed now, or by another consumer already
        _, found = await self._claim(reader, "ids", *due)
        return found

    async def _scan(self, reader: Redis, limit: int) -> list[Message]:
        self._cursor, found = await self._claim(reader, "auto", self._cursor, limit)
        if not found or self._cursor == "0-0":  # else go on scanning at the next call
            self._next_scan = time.monotonic() + self.settings.block
        return found

    async def _claim(self, reader: Redis, *how: str | int) -> tuple[str, list[Message]]:
        """Entries idle for ``claim_idle``: those of ``how = ("ids", *ids)``, or
        the next ones from ``how = ("auto", cursor, count)``; a delivery counted."""
        args = [self.spec.group, self.name, self._idle_ms, *how]
        cursor, entries, counts = await self.scripts.claim([self.key], args, reader)
        topic, group = self.spec.topic, self.spec.group
        found = [
            _wire.message(topic, group, entry_id, fields, count)
            for (entry_id, fields), count in zip(entries, counts, strict=True)
        ]
        return cursor.decode() if isinstance(cursor, bytes) else str(cursor), found

    async def _read(self, reader: Redis, limit: int, wait: bool) -> list[Message]:
        block = None
        if wait:
            until = min([self._next_scan, *self._parked.values()])
            seconds = min(self.settings.block, until - time.monotonic())
            block = max(1, int(seconds * 1000))
        self._blocking = wait
        try:
            reply: Any = await reader.xreadgroup(
                self.spec.group, self.name, {self.key: ">"}, count=limit, block=block
            )
        finally:
            self._blocking = False
        topic, group = self.spec.topic, self.spec.group
        return [
            _wire.message(topic, group, entry_id, fields, 1)
            for _, entries in reply or ()
            for entry_id, fields in entries
        ]

    # -- settling --------------------------------------------------------------------

    async def ack(self, messages: Sequence[Message]) -> None:
        async with _errors.bounded(self.settings.publish_timeout, f"ack on {self.key!r}"):
            await self.shared.xack(self.key, self.spec.group, *(m.receipt for m in messages))

    async def nack(self, message: Message, delay: float | None) -> None:
        wait = min(delay or 0.0, self.settings.claim_idle)
        if delay and delay > wait:
            log.warning(
                "nack delay %ss of message %s exceeds claim_idle; using %ss",
                delay,
                message.id,
                wait,
            )
        idle = int((self.settings.claim_idle - wait) * 1000)
        args: list[str | int] = [self.spec.group, self.name, RETURNED, idle, message.receipt]
        async with _errors.bounded(self.settings.publish_timeout, f"nack on {self.key!r}"):
            moved = await self.scripts.move([self.key], args, self.shared)
        if moved:
            self._parked[message.receipt] = time.monotonic() + wait + DUE_MARGIN
            await self._wake()

    async def extend(self, messages: Sequence[Message]) -> None:
        args: list[str | int] = [self.spec.group, self.name, self.name, 0]
        args += [m.receipt for m in messages]
        async with _errors.bounded(self.settings.publish_timeout, f"renewal on {self.key!r}"):
            await self.scripts.move([self.key], args, self.shared)

    async def _wake(self) -> None:
        """End a blocking read now (CLIENT UNBLOCK), so a nacked entry is claimed back
        when due; where the command is refused the read ends within ``block``."""
        if self._blocking and self._reader_id is not None:
            with contextlib.suppress(PolybusError):
                async with _errors.bounded(self.settings.publish_timeout, "CLIENT UNBLOCK"):
                    await self.shared.client_unblock(self._reader_id)

    async def close(self) -> None:
        """Give back every entry pending on this consumer (claimable at once) and
        delete its name; if the server cannot be reached, the entries come back after
        ``claim_idle``. Entries it nacked keep their delay."""
        if self._closed:
            return
        self._closed = True
        reader, self._reader = self._reader, None
        try:
            if self._reader_id is not None:  # opened: it may hold entries
                self._blocking = True  # a read that close cancelled may still block
                await self._wake()
                args: list[str | int] = [self.spec.group, self.name, RETURNED, self._idle_ms]
                async with _errors.bounded(self.settings.publish_timeout, "giving back"):
                    await self.scripts.release([self.key], args, self.shared)
        except PolybusError as exc:
            log.warning("%r: %s; they come back after claim_idle", self, exc)
        finally:
            self._parked.clear()
            if reader is not None:
                with contextlib.suppress(*_errors.NATIVE):
                    await reader.aclose()
