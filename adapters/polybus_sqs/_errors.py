"""botocore exceptions -> polybus errors, in one place (the native one is ``__cause__``).

Messages are built from the AWS error code and message only, then scrubbed of any
credential value this adapter knows, so no secret reaches an error or a log line.
"""

from __future__ import annotations

from collections.abc import Iterable

from botocore import exceptions as bx
from botocore.parsers import ResponseParserError

from polybus.errors import BrokerUnavailable, ConfigError, PolybusError, PublishError

_RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "KMSThrottlingException",
        "RequestTimeout",
    }
)
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "ExpiredToken",
        "InvalidSecurity",
    }
)
_CONFLICT_CODES = frozenset({"QueueAlreadyExists", "QueueNameExists"})
_GONE_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "QueueDeletedRecently"}
)
"""A queue that vanished (deleted, or a broker that lost its state) or cannot be made
again yet: transient for a consumer, whose reopen declares the group again."""
_TRANSPORT = (
    bx.ConnectionError,  # endpoint unreachable, connect timeout, proxy, TLS
    bx.HTTPClientError,  # connection closed or reset, read timeout, truncated response
    ResponseParserError,  # an answer garbled on the way (a proxy, a cut mid-body)
)


def code_of(exc: BaseException) -> str:
    """The AWS error code of a ``ClientError`` ('' for anything else)."""
    if isinstance(exc, bx.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_gone(exc: BaseException) -> bool:
    """``exc`` (or the native error it translates) says the queue does not exist."""
    cause = exc if isinstance(exc, bx.ClientError) else exc.__cause__
    return cause is not None and code_of(cause) in _GONE_CODES


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every known secret value replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def is_retryable_code(code: str) -> bool:
    return code in _RETRYABLE_CODES


def _server_fault(exc: BaseException) -> bool:
    """An HTTP 5xx or 429 answer (a proxy or the service failing, throttling)."""
    if not isinstance(exc, bx.ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return isinstance(status, int) and (status >= 500 or status == 429)


def translate(
    exc: BaseException,
    action: str,
    *,
    secrets: Iterable[str] = (),
    publish_ids: tuple[str, ...] | None = None,
) -> PolybusError:
    """The polybus error for ``exc`` raised by ``action`` (a phrase naming what was
    attempted, e.g. "create queue orders--billing"). ``publish_ids`` set means the call
    was a publish of those ids: failures become :class:`PublishError` naming them.

    Transient failures (transport, throttling, 5xx, a vanished queue) become
    :class:`BrokerUnavailable`; refused credentials :class:`ConfigError`; anything
    else a plain :class:`PolybusError` (permanent)."""
    if isinstance(exc, PolybusError):
        return exc
    secrets = tuple(secrets)
    if isinstance(exc, bx.NoRegionError):
        return ConfigError("region", "no AWS region: set region= or AWS_DEFAULT_REGION")
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return ConfigError("credentials", f"no usable AWS credentials for {action}")
    if isinstance(exc, _TRANSPORT):
        text = scrub(f"cannot reach SQS/SNS to {action}: {type(exc).__name__}", secrets)
        if publish_ids is not None:
            return PublishError(text, retryable=True, failed_ids=publish_ids)
        return BrokerUnavailable(text)
    code = code_of(exc)
    if isinstance(exc, bx.ClientError):
        detail = str(exc.response.get("Error", {}).get("Message", "")) or code
        text = scrub(f"{action} failed: {code}: {detail}", secrets)
    else:
        text = scrub(f"{action} failed: {type(exc).__name__}: {exc}", secrets)
    if code in _CREDENTIAL_CODES:
        return ConfigError("credentials", text)
    if code in _CONFLICT_CODES:
        return ConfigError("queue", text + " (it exists with other attributes)")
    transient = is_retryable_code(code) or _server_fault(exc)
    if publish_ids is not None:
        return PublishError(text, retryable=transient, failed_ids=publish_ids)
    if transient or code in _GONE_CODES:
        return BrokerUnavailable(text)
    return PolybusError(text)
