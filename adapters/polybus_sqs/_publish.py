"""Publishing a batch: SNS PublishBatch or SQS SendMessageBatch, 10 per call.

Every message is encoded and checked against the 256 KiB limit before anything is
sent. Entries the broker refuses with a retryable code are sent again (a few times,
with :data:`RETRY_BACKOFF`); what still fails is reported in
:class:`~polybus.errors.PublishError` ``failed_ids`` together with every message not
sent, so nothing is silently dropped. Standard topics send their batches concurrently;
FIFO topics one batch after the other, to keep each key's publish order. The ids of
every confirmed batch are added to ``confirmed`` as it is confirmed, so a caller that
gives up (``publish_timeout``) can name exactly the unconfirmed ones.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from polybus.errors import MessageTooLarge, PublishError
from polybus.spi import Backoff, Envelope

from . import _wire
from ._errors import is_retryable_code

log = logging.getLogger("polybus.sqs")

SendBatch = Callable[[list[dict[str, Any]]], Awaitable[dict[str, Any]]]
"""Sends entries (SNS or SQS shaped); returns the response with Successful/Failed."""

RETRIES = 3
"""Times refused entries are sent again."""
RETRY_BACKOFF = Backoff(initial=0.05, multiplier=4.0, max_delay=0.8, jitter="equal")
PARALLEL_BATCHES = 8
_rng = random.Random()


def encode_all(topic: str, envelopes: Sequence[Envelope], *, fifo: bool) -> list[_wire.Wire]:
    """Encode every envelope; :class:`MessageTooLarge` names the first that does not fit."""
    wires = [_wire.encode(env, fifo=fifo) for env in envelopes]
    for wire in wires:
        if wire.size > _wire.MAX_MESSAGE_BYTES:
            raise MessageTooLarge(
                f"message {wire.id} for topic {topic!r} is {wire.size} bytes on the wire "
                f"(body, base64 for binary bodies, plus attributes); the SQS/SNS limit is "
                f"{_wire.MAX_MESSAGE_BYTES}",
                size=wire.size,
                limit=_wire.MAX_MESSAGE_BYTES,
            )
    return wires


def _entry(body_field: str, wire: _wire.Wire, index: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Id": str(index),
        body_field: wire.body,
        "MessageAttributes": wire.attributes,
    }
    if wire.group_id is not None:
        entry["MessageGroupId"] = wire.group_id
        entry["MessageDeduplicationId"] = wire.dedup_id
    return entry


def sns_entry(wire: _wire.Wire, index: int) -> dict[str, Any]:
    """A PublishBatch entry (SNS names the body ``Message``)."""
    return _entry("Message", wire, index)


def sqs_entry(wire: _wire.Wire, index: int) -> dict[str, Any]:
    """A SendMessageBatch entry (SQS names the body ``MessageBody``)."""
    return _entry("MessageBody", wire, index)


async def publish(
    topic: str,
    wires: Sequence[_wire.Wire],
    send: SendBatch,
    make_entry: Callable[[_wire.Wire, int], dict[str, Any]],
    *,
    ordered: bool,
    confirmed: set[str],
) -> None:
    """Send ``wires`` in batches, adding each confirmed id to ``confirmed``; raise
    :class:`PublishError` listing every id not confirmed (a batch that failed as a
    whole, entries refused, batches not sent)."""
    runs = list(_wire.batches(wires))
    failed: list[str] = []
    errors: list[PublishError] = []
    if ordered:
        for i, run in enumerate(runs):
            try:
                await _send_run(topic, run, send, make_entry, confirmed)
            except PublishError as exc:
                errors.append(exc)
                failed += exc.failed_ids
                failed += [w.id for later in runs[i + 1 :] for w in later]
                break
    else:
        limit = asyncio.Semaphore(PARALLEL_BATCHES)

        async def one(run: list[_wire.Wire]) -> None:
            async with limit:
                await _send_run(topic, run, send, make_entry, confirmed)

        results = await asyncio.gather(*(one(r) for r in runs), return_exceptions=True)
        for run, result in zip(runs, results, strict=True):
            if isinstance(result, PublishError):
                errors.append(result)
                failed += result.failed_ids or tuple(w.id for w in run)
            elif isinstance(result, BaseException):
                raise result
    if errors:
        first = errors[0]
        raise PublishError(
            f"{len(failed)} of {len(wires)} messages to topic {topic!r} not confirmed: {first}",
            retryable=all(e.retryable for e in errors),
            failed_ids=tuple(failed),
        ) from first


async def _send_run(
    topic: str,
    run: list[_wire.Wire],
    send: SendBatch,
    make_entry: Callable[[_wire.Wire, int], dict[str, Any]],
    confirmed: set[str],
) -> None:
    pending = dict(enumerate(run))
    for attempt in range(RETRIES + 1):
        entries = [make_entry(w, i) for i, w in pending.items()]
        try:
            out = await send(entries)
        except PublishError as exc:
            # the call as a whole failed: none of the entries is known to be confirmed
            raise PublishError(
                str(exc), retryable=exc.retryable, failed_ids=tuple(w.id for w in pending.values())
            ) from exc
        refused = {int(f["Id"]): f for f in out.get("Failed") or ()}
        for index in list(pending):
            if index not in refused:
                confirmed.add(pending.pop(index).id)
        if not pending:
            return
        permanent = [f for f in refused.values() if not _retryable(f)]
        if permanent or attempt == RETRIES:
            sample = (permanent or list(refused.values()))[0]
            raise PublishError(
                f"broker refused {len(pending)} message(s) of topic {topic!r}: "
                f"{sample.get('Code')}: {sample.get('Message', '')}",
                retryable=not permanent,
                failed_ids=tuple(w.id for w in pending.values()),
            )
        log.debug("retrying %d refused messages topic=%s", len(pending), topic)
        await asyncio.sleep(RETRY_BACKOFF.delay(attempt + 1, _rng))


def _retryable(failure: dict[str, Any]) -> bool:
    return not failure.get("SenderFault", False) or is_retryable_code(str(failure.get("Code")))
