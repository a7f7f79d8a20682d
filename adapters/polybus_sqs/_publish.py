"""Publishing a batch: SNS PublishBatch or SQS SendMessageBatch, 10 per call.

Every message is encoded and checked against the 256 KiB limit before anything is
sent. Entries the broker refuses with a retryable code are sent again (a few times,
short backoff); what still fails is reported in :class:`~polybus.errors.PublishError`
``failed_ids`` together with every message not sent, so nothing is silently dropped.
Standard topics send their batches concurrently; FIFO topics one batch after the
other, to keep each key's publish order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from polybus.errors import MessageTooLarge, PublishError
from polybus.spi import Envelope

from . import _wire
from ._errors import is_retryable_code

log = logging.getLogger("polybus.sqs")

SendBatch = Callable[[list[dict[str, Any]]], Awaitable[dict[str, Any]]]
"""Sends entries (SNS or SQS shaped); returns the response with Successful/Failed."""

RETRY_DELAYS = (0.05, 0.2, 0.5)
PARALLEL_BATCHES = 8


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
) -> None:
    """Send ``wires`` in batches; raise :class:`PublishError` listing every id not
    confirmed (a batch that failed as a whole, entries refused, batches not sent)."""
    runs = list(_wire.batches(wires))
    failed: list[str] = []
    errors: list[PublishError] = []
    if ordered:
        for i, run in enumerate(runs):
            try:
                await _send_run(topic, run, send, make_entry)
            except PublishError as exc:
                errors.append(exc)
                failed += exc.failed_ids
                failed += [w.id for later in runs[i + 1 :] for w in later]
                break
    else:
        limit = asyncio.Semaphore(PARALLEL_BATCHES)

        async def one(run: list[_wire.Wire]) -> None:
            async with limit:
                await _send_run(topic, run, send, make_entry)

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
) -> None:
    pending = dict(enumerate(run))
    for attempt in range(len(RETRY_DELAYS) + 1):
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
                del pending[index]
        if not pending:
            return
        permanent = [f for f in refused.values() if not _retryable(f)]
        if permanent or attempt == len(RETRY_DELAYS):
            sample = (permanent or list(refused.values()))[0]
            raise PublishError(
                f"broker refused {len(pending)} message(s) of topic {topic!r}: "
                f"{sample.get('Code')}: {sample.get('Message', '')}",
                retryable=not permanent,
                failed_ids=tuple(w.id for w in pending.values()),
            )
        log.debug("retrying %d refused messages topic=%s", len(pending), topic)
        await asyncio.sleep(RETRY_DELAYS[attempt])


def _retryable(failure: dict[str, Any]) -> bool:
    return not failure.get("SenderFault", False) or is_retryable_code(str(failure.get("Code")))
