"""SQL stores joining the handler's transaction: effect and marker commit together."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from polybus.errors import ConfigError
from polybus.middleware import Idempotency, Sequences
from polybus.stores import MemoryStore, PostgresStore, SQLiteStore, current_transaction

from .conftest import postgres_store
from .scenarios import atomic_failure_leaves_nothing, duplicates_processed_once


@dataclass
class SQLCase:
    store: SQLiteStore | PostgresStore
    placeholder: str
    effects: str


@pytest.fixture(params=["sqlite", "postgres"])
async def sql(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLCase]:
    store: SQLiteStore | PostgresStore
    if request.param == "sqlite":
        store, placeholder = SQLiteStore(tmp_path / "atomic.db"), "?"
    else:
        store, placeholder = await postgres_store(), "%s"
    effects = f"effects_{uuid.uuid4().hex[:12]}"
    async with store.transaction() as tx:
        await tx.execute(f"CREATE TABLE {effects} (id TEXT NOT NULL)")
    try:
        yield SQLCase(store, placeholder, effects)
    finally:
        async with store.transaction() as tx:
            await tx.execute(f"DROP TABLE {effects}")
        if isinstance(store, PostgresStore):
            await store.drop()
        await store.close()


async def test_a_failure_after_writing_leaves_neither_effect_nor_marker(sql: SQLCase) -> None:
    p = sql.placeholder
    await atomic_failure_leaves_nothing(
        sql.store,
        placeholder=p,
        effects=sql.effects,
        count_markers=(
            f"SELECT COUNT(*) FROM {sql.store.table} WHERE state = 'done' AND key LIKE {p}"
        ),
    )


async def test_atomic_duplicates_are_processed_once_under_concurrency(sql: SQLCase) -> None:
    await duplicates_processed_once(
        sql.store, atomic=True, placeholder=sql.placeholder, table=sql.effects
    )
    async with sql.store.transaction() as tx:
        rows = await tx.execute(f"SELECT COUNT(*), COUNT(DISTINCT id) FROM {sql.effects}")
    assert rows[0] == (10, 10)  # one committed effect per id


def test_current_transaction_outside_a_handler_says_why() -> None:
    with pytest.raises(LookupError, match="atomic=True"):
        current_transaction()


def test_atomic_needs_a_sql_store_and_the_id_strategy(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Idempotency(MemoryStore(), atomic=True)
    assert info.value.field == "atomic"
    with pytest.raises(ConfigError) as info:
        Idempotency(SQLiteStore(tmp_path / "x.db"), Sequences(), atomic=True)
    assert info.value.field == "atomic"
