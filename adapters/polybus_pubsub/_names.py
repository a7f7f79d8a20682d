"""polybus topic and group names -> Pub/Sub resource ids.

Pub/Sub ids are 3..255 characters from ``A-Za-z0-9-_.~+%``, start with a letter and
must not start with ``goog``. A name made only of ``A-Za-z0-9-_.~+`` that follows
those rules is used unchanged. Otherwise every other character (``%`` included) is
written as ``%XX`` of its UTF-8 bytes, ``x%_`` is put in front when the name does not
start with a letter or starts with ``goog``, ``%_`` is appended to names shorter than
3, and names longer than 255 keep 237 characters plus ``%_`` and a 16-digit hash.
``%_`` never comes out of the escaping, so different names give different ids
(except, in theory, for the hashed long ones).

Subscriptions are project-wide while groups belong to a topic, so a group's
subscription id is ``TOPIC~GROUP`` with ``~`` escaped inside both parts.
"""

from __future__ import annotations

import hashlib
import string

MAX_ID = 255
_SAFE = frozenset(string.ascii_letters + string.digits + "-_.~+")


def _escape(name: str, unsafe: str = "") -> str:
    out = []
    for char in name:
        if char in _SAFE and char not in unsafe:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def _fit(escaped: str) -> str:
    if not escaped[:1].isalpha() or not escaped[:1].isascii() or escaped.lower().startswith("goog"):
        escaped = "x%_" + escaped
    while len(escaped) < 3:
        escaped += "%_"
    if len(escaped) > MAX_ID:
        digest = hashlib.sha256(escaped.encode()).hexdigest()[:16]
        escaped = f"{escaped[: MAX_ID - 18]}%_{digest}"
    return escaped


def topic_id(topic: str) -> str:
    """The Pub/Sub topic id of polybus topic ``topic``."""
    return _fit(_escape(topic))


def subscription_id(topic: str, group: str) -> str:
    """The Pub/Sub subscription id of ``group`` on ``topic``."""
    return _fit(f"{_escape(topic, '~')}~{_escape(group, '~')}")
