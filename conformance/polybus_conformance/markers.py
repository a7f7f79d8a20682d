"""How a conformance test declares what it needs from a backend.

Each test says it once, with :func:`needs`; the plugin skips the test in one place
with the reason ``backend lacks capability: X``. Test bodies never check features.

A need is a boolean :class:`polybus.Capabilities` field (``fan_out``, ``key_order``),
``network``: a broker outside the test process that can be unreachable or outlive a
killed consumer (``memory://`` is not one), or ``native_client``: the suite can talk to
the broker with its plain native client (foreign messages; not ``memory://``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from polybus.capabilities import Capabilities

F = TypeVar("F", bound=Callable[..., Any])

MARKER = "polybus_needs"
NETWORK = "network"
NATIVE_CLIENT = "native_client"
_REMOTE_ONLY = (NETWORK, NATIVE_CLIENT)


def needs(*capabilities: str) -> Callable[[F], F]:
    """Declare the capabilities a test relies on (checked when the test runs)."""
    mark = getattr(pytest.mark, MARKER)(*capabilities)

    def apply(func: F) -> F:
        marked: F = mark(func)
        return marked

    return apply


def missing(capabilities: Capabilities, remote: bool, wanted: tuple[str, ...]) -> list[str]:
    """The needs among ``wanted`` that a backend with ``capabilities`` lacks."""
    out = [] if remote else [w for w in _REMOTE_ONLY if w in wanted]
    out += capabilities.missing(*(w for w in wanted if w not in _REMOTE_ONLY))
    return out


def skip_reason(lacking: list[str]) -> str:
    why = {
        NETWORK: f"{NETWORK} (the broker runs inside the test process)",
        NATIVE_CLIENT: f"{NATIVE_CLIENT} (no native client exists for an in-process broker)",
    }
    named = [why.get(n, n) for n in lacking]
    return "backend lacks capability: " + ", ".join(named)
