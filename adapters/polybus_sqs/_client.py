"""boto3 clients for SNS and SQS, called from the event loop through a thread pool.

boto3 is blocking: every call runs in this adapter's own executor (never the loop's
default one, which a few long polls would starve), and a receive's long poll only
ever blocks one of those threads. boto3 clients are thread-safe; sessions are not,
so the session is used only while opening.

Two read timeouts bound every call: a receive waits at most ``wait_time_seconds +
connect_timeout`` for its answer (its own client), every other call (sends, deletes,
visibility changes, topology) ``connect_timeout``, so a stalled network makes a call
fail within a few ``connect_timeout`` (botocore retries included) instead of hanging.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config

from ._errors import translate
from ._settings import SQSSettings

log = logging.getLogger("polybus.sqs")

# boto3.Session.client() keyword arguments; every other option is a botocore Config field
_CLIENT_ARGS = frozenset(
    {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "verify",
        "use_ssl",
        "api_version",
        "aws_account_id",
    }
)
CALL_ATTEMPTS = 3
"""botocore attempts per call, the first included (standard retry mode: throttling,
5xx, transport errors)."""
RECEIVE_ATTEMPTS = 2
"""Attempts per receive: the core backs off and reopens the consumer after that."""


class Clients:
    """The SNS and SQS clients of one adapter and the threads that call them."""

    def __init__(self, settings: SQSSettings) -> None:
        self.settings = settings
        self._executor: ThreadPoolExecutor | None = None
        self._sqs: Any = None
        self._poll: Any = None
        self._sns: Any = None
        self._secrets: tuple[str, ...] = ()

    @property
    def secrets(self) -> tuple[str, ...]:
        """Credential values to scrub from any error text."""
        return self._secrets

    async def open(self) -> None:
        """Create the clients and check the endpoint answers (no time bound here: the
        adapter bounds ``open`` by ``connect_timeout``)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.settings.max_threads, thread_name_prefix="polybus-sqs"
            )
        try:
            await self._run(self._make_clients)
        except Exception as exc:
            raise translate(exc, "connect", secrets=self._secrets) from exc
        # one cheap call per service: wrong endpoint, region or credentials fail here
        await self.sqs("list_queues", "connect to SQS", MaxResults=1)
        if self.settings.sns:
            await self.sns("list_topics", "connect to SNS")

    def _make_clients(self) -> None:
        s = self.settings
        native = dict(s.options)
        client_args = {k: native.pop(k) for k in list(native) if k in _CLIENT_ARGS}
        base: dict[str, Any] = {
            "connect_timeout": s.connect_timeout,
            "read_timeout": s.connect_timeout,
            "max_pool_connections": s.max_threads,
            "retries": {"mode": "standard", "total_max_attempts": CALL_ATTEMPTS},
        }
        short = Config(**{**base, **native})
        # a long poll must outlive its socket read timeout, whatever the options say
        poll_read = max(float(native.get("read_timeout", 0)), s.receive_read_timeout)
        poll_retries = {"mode": "standard", "total_max_attempts": RECEIVE_ATTEMPTS}
        poll = Config(**{**base, "retries": poll_retries, **native, "read_timeout": poll_read})
        session = boto3.session.Session()
        creds = session.get_credentials()
        found = [client_args.get("aws_secret_access_key"), client_args.get("aws_session_token")]
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            found += [frozen.secret_key, frozen.token]
        self._secrets = tuple(str(v) for v in found if v)
        common = {"region_name": s.region, "endpoint_url": s.endpoint_url}
        self._sqs = session.client("sqs", **common, config=short, **client_args)
        self._poll = session.client("sqs", **common, config=poll, **client_args)
        if s.sns:
            self._sns = session.client("sns", **common, config=short, **client_args)

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._executor is None:
            raise RuntimeError("the SQS adapter is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def sqs(self, op: str, action: str, **kwargs: Any) -> Any:
        """Call SQS operation ``op`` in a thread; errors translated, naming ``action``."""
        return await self._call(self._sqs, op, action, kwargs)

    async def sns(self, op: str, action: str, **kwargs: Any) -> Any:
        """Call SNS operation ``op`` in a thread; errors translated, naming ``action``."""
        return await self._call(self._sns, op, action, kwargs)

    async def receive(self, action: str, **kwargs: Any) -> Any:
        """``ReceiveMessage`` (long poll) on the receive client; errors translated."""
        return await self._call(self._poll, "receive_message", action, kwargs)

    async def raw(self, op: str, **kwargs: Any) -> Any:
        """Call SNS (``sns=true``) or SQS operation ``op`` in a thread, native exceptions
        untouched (the publisher translates them, naming the unconfirmed ids)."""
        client = self._sns if self.settings.sns else self._sqs
        if client is None:
            raise RuntimeError("the SQS adapter is not open")
        return await self._run(getattr(client, op), **kwargs)

    def submit(self, op: str, **kwargs: Any) -> None:
        """Run SQS operation ``op`` in a thread without waiting (best effort: a failure
        is logged). For a release that must not wait for the event loop."""
        executor, client = self._executor, self._sqs
        if executor is None or client is None:
            return
        try:
            done: Future[Any] = executor.submit(functools.partial(getattr(client, op), **kwargs))
        except RuntimeError:  # the executor is shutting down
            return
        done.add_done_callback(_log_failure)

    async def _call(self, client: Any, op: str, action: str, kwargs: dict[str, Any]) -> Any:
        if client is None:
            raise RuntimeError(f"cannot {action}: the adapter is not open")
        try:
            return await self._run(getattr(client, op), **kwargs)
        except Exception as exc:
            raise translate(exc, action, secrets=self._secrets) from exc

    def close(self) -> None:
        """Release the threads and HTTP connections. Idempotent; calls in flight finish."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=False)
        for client in (self._sqs, self._poll, self._sns):
            if client is not None:
                client.close()
        self._sqs = self._poll = self._sns = None


def _log_failure(done: Future[Any]) -> None:
    exc = done.exception()
    if exc is not None:
        log.warning("background SQS call failed: %s", type(exc).__name__)
