"""Fixtures for the core tests: every test gets its own memory:// broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

import polybus


@pytest.fixture
def url() -> str:
    """A memory:// URL naming a broker no other test uses."""
    return f"memory://t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def bus(url: str) -> AsyncIterator[polybus.Bus]:
    async with polybus.connect(url) as opened:
        yield opened
