"""Translation of confluent-kafka errors into :mod:`polybus.errors`, in one place.

The native :class:`confluent_kafka.KafkaError` / :class:`~confluent_kafka.KafkaException`
is always kept as ``__cause__``. Messages name the topic and never the settings (which
may hold SASL secrets).
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from polybus.errors import BrokerUnavailable, ConfigError, MessageTooLarge, PublishError

_TOO_LARGE = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
    }
)

_UNREACHABLE = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError.BROKER_NOT_AVAILABLE,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.REQUEST_TIMED_OUT,
    }
)

_LOGIN_REFUSED = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})

_CONFIG = frozenset(
    {
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.INVALID_PARTITIONS,
        KafkaError.INVALID_REPLICATION_FACTOR,
        KafkaError.INVALID_CONFIG,
        KafkaError.POLICY_VIOLATION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,
        *_LOGIN_REFUSED,
    }
)


def native_error(exc: BaseException) -> KafkaError | None:
    """The :class:`KafkaError` inside ``exc``, if it carries one."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def publish_error(
    err: KafkaError, topic: str, *, failed_ids: tuple[str, ...], limit: int, size: int = 0
) -> PublishError:
    """The polybus error for a failed delivery report or a refused ``produce``."""
    code = err.code()
    if code in _TOO_LARGE:
        return MessageTooLarge(
            f"the broker refused a message for topic {topic!r} as too large "
            f"({err.str()}); polybus allows up to {limit} bytes",
            size=size,
            limit=limit,
        )
    retryable = bool(err.retriable()) or code in _UNREACHABLE or code == KafkaError._MSG_TIMED_OUT
    return PublishError(
        f"publish to topic {topic!r} not confirmed: {err.name()}: {err.str()}",
        retryable=retryable,
        failed_ids=failed_ids,
    )


def admin_error(exc: BaseException, what: str) -> Exception:
    """The polybus error for a failed admin or consumer-group operation ``what``."""
    err = native_error(exc)
    if err is None:
        return BrokerUnavailable(f"{what} failed: {type(exc).__name__}: {exc}")
    if err.code() in _CONFIG:
        return ConfigError(what, f"{err.name()}: {err.str()}")
    return BrokerUnavailable(f"{what} failed: {err.name()}: {err.str()}")


def unreachable(exc: BaseException, what: str) -> Exception:
    """The polybus error when no broker answered ``what``: a refused login is a
    :class:`ConfigError` (retrying cannot help), anything else :class:`BrokerUnavailable`."""
    err = native_error(exc)
    if err is not None and err.code() in _LOGIN_REFUSED:
        return ConfigError("options", f"the broker refused the login: {err.str()}")
    return BrokerUnavailable(f"{what}: {err.str() if err is not None else exc}")
