"""Body encoding and decoding: pure functions, no I/O."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from .errors import SerializationError

BYTES = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"

T = TypeVar("T")


def encode(body: object, content_type: str | None = None) -> tuple[bytes, str]:
    """Encode a publishable body; return the bytes and their content type.

    bytes stay as they are, str is UTF-8 text, a pydantic model is its JSON, anything
    else goes through :func:`json.dumps`. An explicit ``content_type`` wins.
    """
    if type(body) is bytes:  # the hot path: no copy, no union isinstance
        return body, content_type or BYTES
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), content_type or BYTES
    if isinstance(body, str):
        return body.encode("utf-8"), content_type or TEXT
    dump = getattr(body, "model_dump_json", None)
    if callable(dump):  # a pydantic v2 model, without importing pydantic
        return dump().encode("utf-8"), content_type or JSON
    try:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"body of type {type(body).__name__} is not bytes, str, a pydantic model "
            f"or JSON-serialisable: {exc}"
        ) from exc
    return data.encode("utf-8"), content_type or JSON


def decode_json(body: bytes) -> Any:
    """Parse a JSON body; a malformed one raises :class:`SerializationError`."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SerializationError(f"body is not valid JSON: {exc}") from exc


def decode_model(body: bytes, model: type[T]) -> T:
    """Validate a JSON body into ``model`` (a pydantic model or a plain class).

    A pydantic model uses ``model_validate_json``; any other class is called with the
    decoded JSON object as keyword arguments (dataclasses, attrs classes, TypedDicts).
    Failures raise :class:`SerializationError`, which is permanent.
    """
    validate = getattr(model, "model_validate_json", None)
    if callable(validate):
        try:
            result: T = validate(body)
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            raise SerializationError(f"body does not match {model.__name__}: {exc}") from exc
        return result
    data = decode_json(body)
    if not isinstance(data, dict):
        raise SerializationError(f"body is not a JSON object, cannot build {model.__name__}")
    try:
        return model(**data)
    except TypeError as exc:
        raise SerializationError(f"body does not match {model.__name__}: {exc}") from exc
