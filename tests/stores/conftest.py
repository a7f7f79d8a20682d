"""Store fixtures. Redis and PostgreSQL are the real servers on this machine
(``POLYBUS_TEST_REDIS_URL``, ``POLYBUS_TEST_POSTGRES_URL`` override the defaults); each
test gets its own key prefix or table and removes it. An unreachable server skips its
tests with the reason, or fails them when ``POLYBUS_REQUIRE`` names it (CI sets
``POLYBUS_REQUIRE=redis,postgres``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from polybus.stores import MemoryStore, PostgresStore, RedisStore, SQLiteStore, Store

REDIS_URL = os.environ.get("POLYBUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "POLYBUS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _unavailable(name: str, exc: BaseException) -> None:
    required = {s.strip() for s in os.environ.get("POLYBUS_REQUIRE", "").split(",")}
    reason = f"{name} is not reachable ({type(exc).__name__}: {exc})"
    if name in required or "all" in required:
        pytest.fail(f"{reason}, and POLYBUS_REQUIRE names it")
    pytest.skip(reason)


async def redis_store() -> RedisStore:
    store = RedisStore(REDIS_URL, prefix=f"polybus-test-{uuid.uuid4().hex[:12]}:")
    try:
        await store.sequence("probe", "probe")
    except Exception as exc:
        await store.close()
        _unavailable("redis", exc)
    return store


async def postgres_store() -> PostgresStore:
    store = PostgresStore(POSTGRES_URL, table=f"polybus_test_{uuid.uuid4().hex[:12]}")
    try:
        await store.sequence("probe", "probe")
    except Exception as exc:
        await store.close()
        _unavailable("postgres", exc)
    return store


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each of the four stores, fresh and private to the test."""
    kind = request.param
    made: Store
    if kind == "memory":
        made = MemoryStore()
    elif kind == "sqlite":
        made = SQLiteStore(tmp_path / "store.db")
    elif kind == "redis":
        made = await redis_store()
    else:
        made = await postgres_store()
    try:
        yield made
    finally:
        if isinstance(made, RedisStore):
            await made.delete_all()
        if isinstance(made, PostgresStore):
            await made.drop()
        await made.close()
