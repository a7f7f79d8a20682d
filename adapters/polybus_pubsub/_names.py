"""polybus topic and group names -> Pub/Sub resource ids, through :func:`spi.fit_name`.

Pub/Sub ids are 3..255 characters from ``A-Za-z0-9._~+%-``, start with a letter and
do not start with ``goog``. A polybus name that already is such an id (without ``%``)
is used unchanged; any other is sanitised, cut and suffixed with a hash of the exact
name (:func:`~polybus.spi.fit_name`), and a valid name shorter than 3 is padded with
``%``. ``%`` never comes out of fitting a user's name otherwise, so it marks the
resources the adapter adds itself (``%parked``) and they never meet a user's name.

Subscriptions are project-wide while groups belong to a topic: a group's subscription
id is ``TOPIC~GROUP``, each part fitted without ``~`` (and at most 127 characters), so
the one ``~`` tells the parts apart and different (topic, group) pairs never share a
subscription.
"""

from __future__ import annotations

from polybus.spi import fit_name

MAX_ID = 255
MIN_ID = 3
LETTER = "A-Za-z"
ALLOWED = "A-Za-z0-9._~+-"
"""Pub/Sub's id characters less ``%``, which only the adapter's own resources use."""
PART = "A-Za-z0-9._+-"
"""Less ``~`` too: it joins the topic and group parts of a subscription id."""
MAX_PART = (MAX_ID - 1) // 2
RESERVED = ("goog",)
PARKED = "%parked"
"""Suffix of the topic (and its subscription) where Pub/Sub parks the messages that a
dead-letter group failed to process 100 times."""


def topic_id(topic: str) -> str:
    """The Pub/Sub topic id of polybus topic ``topic``."""
    fitted = fit_name(
        topic, allowed=ALLOWED, first=LETTER, max_length=MAX_ID, reserved_prefixes=RESERVED
    )
    return fitted + "%" * (MIN_ID - len(fitted))


def subscription_id(topic: str, group: str) -> str:
    """The Pub/Sub subscription id of ``group`` on ``topic``."""
    head = fit_name(
        topic, allowed=PART, first=LETTER, max_length=MAX_PART, reserved_prefixes=RESERVED
    )
    tail = fit_name(group, allowed=PART, max_length=MAX_PART)
    return f"{head}~{tail}"


def parked_id(topic: str) -> str:
    """The id of the topic, and of its one subscription, that keeps what Pub/Sub's
    backstop moves out of a dead-letter group on ``topic``."""
    return fit_name(
        topic,
        allowed=ALLOWED,
        first=LETTER,
        max_length=MAX_ID,
        suffix=PARKED,
        reserved_prefixes=RESERVED,
    )
