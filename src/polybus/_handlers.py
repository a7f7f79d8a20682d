"""Typed handlers: what a handler's signature asks for, decoded before it runs.

A handler takes the :class:`~polybus.Message` (``async def h(msg: Message)``, or an
unannotated parameter), or the body decoded into a type (``async def h(order: Order)``),
or both (``async def h(order: Order, msg: Message)``). The body type is a pydantic model,
a dataclass or any class built from the JSON object's fields, or ``bytes``, ``str``,
``dict``/``list``/``object`` for the raw body, the text and parsed JSON. A body that does
not decode raises :class:`~polybus.errors.SerializationError`, a permanent error: the
message is dead-lettered at once with the validation error, never retried.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ._codec import decode_json, decode_model
from ._message import Message
from .errors import ConfigError

__all__ = ["Signature", "bind", "signature_of"]

Decoder = Callable[[Message], Any]


@dataclass(frozen=True, slots=True)
class Signature:
    """How to call one handler: the decoder of its body argument (None: it takes the
    message only) and whether it also takes the message."""

    decode: Decoder | None
    with_message: bool
    is_async: bool

    def arguments(self, msg: Message) -> tuple[Any, ...]:
        if self.decode is None:
            return (msg,)
        body = self.decode(msg)
        return (body, msg) if self.with_message else (body,)


def _text(msg: Message) -> str:
    return msg.text()


def _json(msg: Message) -> Any:
    return decode_json(msg.body)


def _raw(msg: Message) -> bytes:
    return msg.body


def _decoder(kind: Any, where: str) -> Decoder:
    if kind is bytes:
        return _raw
    if kind is str:
        return _text
    origin = typing.get_origin(kind) or kind
    if origin in (dict, list, object) or kind is Any:
        return _json
    if isinstance(kind, type):

        def model(msg: Message) -> Any:
            return decode_model(msg.body, kind)

        return model
    raise ConfigError("handler", f"{where}: cannot decode a body into {kind!r}")


def _is_message(kind: Any) -> bool:
    return kind is Message or (isinstance(kind, type) and issubclass(kind, Message))


def signature_of(func: Callable[..., Any]) -> Signature:
    """Read ``func``'s parameters once, at registration; ConfigError if unusable."""
    where = getattr(func, "__qualname__", repr(func))
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise ConfigError("handler", f"{where}: no inspectable signature ({exc})") from exc
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable annotations: treat the parameters as untyped
        hints = {}
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    is_async = inspect.iscoroutinefunction(func)
    if not positional or len(required) > 2:
        raise ConfigError(
            "handler",
            f"{where}: a handler takes (msg), (body) or (body, msg), got {len(required)} "
            "required parameters",
        )
    first = hints.get(positional[0].name, inspect.Parameter.empty)
    if first is inspect.Parameter.empty or _is_message(first):
        if len(required) > 1:
            raise ConfigError("handler", f"{where}: only the body may come before the message")
        return Signature(None, False, is_async)
    with_message = len(positional) > 1 and (
        _is_message(hints.get(positional[1].name)) or len(required) == 2
    )
    return Signature(_decoder(first, where), with_message, is_async)


def bind(func: Callable[..., Any], sig: Signature) -> Callable[[Message], Awaitable[None]]:
    """An async ``Message -> None`` for an async ``func`` of signature ``sig``."""

    async def call(msg: Message) -> None:
        await func(*sig.arguments(msg))

    return call
