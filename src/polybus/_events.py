"""Reliability events for observers (the OpenTelemetry metrics): retries, skipped
duplicates, circuit-breaker changes, dead letters. With no listener (the default), an
emit is one truth test of a module-level list."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["emit", "listen", "unlisten"]

Listener = Callable[[str, Mapping[str, Any]], None]

_listeners: list[Listener] = []


def emit(event: str, **attributes: Any) -> None:
    """Tell every listener that ``event`` happened (``retry``, ``duplicate_skipped``,
    ``breaker_state``, ``dead_lettered``), with its attributes (topic, group...)."""
    if _listeners:
        for listener in list(_listeners):
            listener(event, attributes)


def listen(listener: Listener) -> None:
    _listeners.append(listener)


def unlisten(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)
