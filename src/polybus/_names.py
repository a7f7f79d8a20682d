"""Fitting polybus names into a broker's naming rules: one rule for every adapter.

A polybus topic or group name is any non-empty string; brokers allow fewer characters
and shorter names. :func:`fit_name` keeps a name that is already valid unchanged (so
it reads the same in the broker's console), and otherwise replaces each run of
characters the broker refuses, cuts it, and appends a hash of the exact name, so two
different polybus names never share a broker resource.
"""

from __future__ import annotations

import functools
import hashlib
import re

__all__ = ["fit_name"]

HASH_DIGITS = 10


@functools.lru_cache(maxsize=64)
def _patterns(allowed: str, first: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    return re.compile(f"[{first}][{allowed}]*"), re.compile(f"[^{allowed}]+")


@functools.lru_cache(maxsize=4096)
def fit_name(
    name: str,
    *,
    allowed: str,
    max_length: int,
    first: str | None = None,
    suffix: str = "",
    reserved_prefixes: tuple[str, ...] = (),
    replacement: str = "_",
) -> str:
    """``name`` (plus ``suffix``) as a valid broker name.

    ``allowed`` is the body of a regular-expression character class (``A-Za-z0-9._-``)
    and ``first`` the class the first character must belong to (default: ``allowed``);
    ``max_length`` counts ``suffix``; a name starting with one of ``reserved_prefixes``
    (case-insensitive) is refused as is. A valid name is returned unchanged with the
    suffix; any other becomes ``<sanitised, cut>-<10 hex digits of sha256(name)>``.
    Pure and deterministic: every process maps a name the same way. Cached (adapters
    fit a topic's names on every publish).
    """
    valid, invalid_run = _patterns(allowed, first or allowed)
    room = max_length - len(suffix)
    if (
        len(name) <= room
        and valid.fullmatch(name)
        and not name.lower().startswith(tuple(p.lower() for p in reserved_prefixes))
    ):
        return name + suffix
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:HASH_DIGITS]
    readable = invalid_run.sub(replacement, name)
    head_ok = re.compile(f"[{first or allowed}]")
    if (
        not readable
        or not head_ok.match(readable[0])
        or readable.lower().startswith(tuple(p.lower() for p in reserved_prefixes))
    ):
        readable = "x" + replacement + readable
    keep = max(1, room - HASH_DIGITS - 1)
    return f"{readable[:keep]}-{digest}{suffix}"
