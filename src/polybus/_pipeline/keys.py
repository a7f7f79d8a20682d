"""Per-key gating for key-ordered groups: one message per key out at a time.

Pure bookkeeping, no I/O. A message is *admitted* when no earlier message of its key
is out (handed out, or waiting to be redelivered in place); otherwise it waits behind
that one, in arrival order, and is released when the key's current message settles.
A nacked message of a key-ordered group stays its key's current message: the core
redelivers it in place (:meth:`KeyGate.replace`), so no later message overtakes it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from .._message import Message

__all__ = ["KeyGate"]


class KeyGate:
    """The per-key hand-out state of one subscription. Not thread-safe (event loop)."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[str, tuple[Message, deque[Message]]] = {}
        """key -> (the key's current message, the later ones waiting, in order)"""

    def __len__(self) -> int:
        """Messages waiting behind their key (not handed out)."""
        return sum(len(waiting) for _, waiting in self._keys.values())

    def admit(self, msg: Message) -> bool:
        """True if ``msg`` may be handed out now (no key, or its key is free: it becomes
        the key's current message); False if it waits behind an earlier one."""
        key = msg.key
        if key is None:
            return True
        found = self._keys.get(key)
        if found is None:
            self._keys[key] = (msg, deque())
            return True
        found[1].append(msg)
        return False

    def release(self, msg: Message) -> Message | None:
        """``msg`` is settled for good. If it was its key's current message, the next
        waiting one (returned) becomes current, or the key is free. Otherwise a no-op."""
        key = msg.key
        if key is None:
            return None
        found = self._keys.get(key)
        if found is None or found[0] is not msg:
            return None
        waiting = found[1]
        if not waiting:
            del self._keys[key]
            return None
        nxt = waiting.popleft()
        self._keys[key] = (nxt, waiting)
        return nxt

    def replace(self, old: Message, new: Message) -> None:
        """``new`` (the in-place redelivery of ``old``) becomes the key's current message."""
        key = old.key
        found = self._keys.get(key) if key is not None else None
        if found is not None and found[0] is old:
            self._keys[key] = (new, found[1])  # type: ignore[index]

    def drop_waiting(self, condition: Callable[[Message], bool]) -> list[Message]:
        """Remove and return the waiting messages for which ``condition`` holds."""
        out: list[Message] = []
        for key, (current, waiting) in list(self._keys.items()):
            kept = deque(m for m in waiting if not condition(m))
            if len(kept) != len(waiting):
                out.extend(m for m in waiting if condition(m))
                self._keys[key] = (current, kept)
        return out

    def clear(self) -> None:
        self._keys.clear()
