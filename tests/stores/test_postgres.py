"""PostgresStore on the real PostgreSQL: the psycopg_pool connection pool, its bounds,
its errors (clear, retryable, never carrying the password) and its recovery.

Each test names its connections with a unique ``application_name`` so that it can find
(and, for the recovery test, terminate) exactly its own server sessions and nobody
else's on the shared server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from polybus.errors import BrokerUnavailable, ConfigError
from polybus.stores import PostgresStore

from .conftest import POSTGRES_URL, _unavailable

PASSWORD = "s3cret-pw-do-not-log"


def private_dsn(app: str) -> str:
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}application_name={app}"


async def sessions(app: str) -> int:
    """How many server sessions carry ``app`` as their application name."""
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as admin:
        cur = await admin.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def terminate(app: str) -> int:
    """Kill the server sessions named ``app`` (as a restart or failover would)."""
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as admin:
        cur = await admin.execute(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s) AS killed",
            (app,),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
async def app() -> str:
    return f"polybus_test_{uuid.uuid4().hex[:12]}"


async def private_store(app: str, *, max_connections: int = 8, wait: float = 30.0) -> PostgresStore:
    store = PostgresStore(
        private_dsn(app), table=app, max_connections=max_connections, timeout=wait
    )
    try:
        await store.sequence("probe", "probe")
    except Exception as exc:
        await store.close()
        _unavailable("postgres", exc)
    return store


@pytest.fixture
async def small(app: str) -> AsyncIterator[PostgresStore]:
    """A store of at most 3 connections that gives up on a free one after 0.5 s."""
    store = await private_store(app, max_connections=3, wait=0.5)
    try:
        yield store
    finally:
        await store.drop()
        await store.close()


async def test_concurrent_callers_share_at_most_max_connections(
    small: PostgresStore, app: str
) -> None:
    values = await asyncio.gather(*(small.incr("s", "n", ttl=60) for _ in range(40)))
    assert sorted(values) == list(range(1, 41))  # every increment atomic, none lost
    assert 1 <= await sessions(app) <= 3


async def test_waiting_past_timeout_for_a_connection_is_broker_unavailable(
    app: str,
) -> None:
    store = await private_store(app, max_connections=1, wait=0.2)
    try:
        async with store.transaction() as tx:  # holds the only connection
            await tx.execute("SELECT 1")
            with pytest.raises(BrokerUnavailable) as info:
                await store.incr("s", "n", ttl=60)
        assert "max_connections=1" in str(info.value)
        assert await store.incr("s", "n", ttl=60) == 1  # free again once the tx ended
    finally:
        await store.drop()
        await store.close()


async def insert_then_fail(store: PostgresStore, table: str) -> None:
    async with store.transaction() as tx:
        await tx.execute(f"INSERT INTO {table} (scope, key, state) VALUES ('s', 'k', 'done')")
        raise RuntimeError("boom")


async def test_a_failed_transaction_rolls_back_and_frees_its_connection(app: str) -> None:
    store = await private_store(app, max_connections=1, wait=5)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            await insert_then_fail(store, app)
        # the only connection came back idle: the next caller is served, sees no row
        async with store.transaction() as tx:
            rows = await tx.execute(f"SELECT COUNT(*) FROM {app}")
        assert rows == [(0,)]
    finally:
        await store.drop()
        await store.close()


async def test_lost_connections_are_reported_as_retryable_and_replaced(
    small: PostgresStore, app: str
) -> None:
    await asyncio.gather(*(small.incr("s", "n", ttl=60) for _ in range(10)))
    assert await terminate(app) >= 1
    failures: list[BaseException] = []
    value = None
    for _ in range(small.max_connections + 1):  # at most one failure per stale connection
        try:
            value = await small.incr("s", "n", ttl=60)
            break
        except Exception as exc:
            failures.append(exc)
    assert value == 11, f"never recovered: {failures!r}"
    assert all(isinstance(exc, BrokerUnavailable) for exc in failures), failures
    assert all("lost the PostgreSQL connection" in str(exc) for exc in failures)


async def test_unreachable_server_fails_at_once_with_the_reason() -> None:
    store = PostgresStore(f"postgresql://polybus:{PASSWORD}@127.0.0.1:1/test", timeout=30)
    try:
        with pytest.raises(BrokerUnavailable) as info:
            await store.incr("s", "n", ttl=60)
    finally:
        await store.close()
    text = str(info.value)
    assert "127.0.0.1" in text
    assert "refused" in text.lower()
    assert PASSWORD not in text
    assert PASSWORD not in repr(store)
    assert info.value.__cause__ is None


async def test_a_refused_login_names_the_reason_but_not_the_password(app: str) -> None:
    # a role that does not exist: refused by the real server whatever its auth method
    role = f"no_such_role_{app}"
    dsn = make_conninfo(private_dsn(app), user=role, password=PASSWORD)
    store = PostgresStore(dsn)
    try:
        with pytest.raises(BrokerUnavailable) as info:
            await store.sequence("s", "e")
    finally:
        await store.close()
    assert role in str(info.value)
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in repr(store)


def test_an_unparseable_dsn_is_a_config_error_without_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        PostgresStore(f"postgresql//polybus:{PASSWORD}@127.0.0.1/test")
    assert info.value.field == "dsn"
    assert PASSWORD not in str(info.value)


def test_bad_pool_settings_name_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        PostgresStore(POSTGRES_URL, max_connections=0)
    assert info.value.field == "max_connections"
    with pytest.raises(ConfigError) as info:
        PostgresStore(POSTGRES_URL, timeout=0)
    assert info.value.field == "timeout"


async def test_a_closed_store_refuses_work(app: str) -> None:
    store = await private_store(app)
    await store.drop()
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await store.incr("s", "n", ttl=60)
