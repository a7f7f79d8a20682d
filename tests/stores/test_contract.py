"""The store contract, the same for every store, on the real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio

from polybus.stores import Claim, Store

from .scenarios import duplicates_processed_once


async def test_claim_complete_and_duplicates(store: Store) -> None:
    assert await store.claim("s", "a", lease=30) is Claim.CLAIMED
    assert await store.claim("s", "a", lease=30) is Claim.BUSY
    assert await store.claim("other-scope", "a", lease=30) is Claim.CLAIMED
    await store.complete("s", "a", ttl=None)
    assert await store.claim("s", "a", lease=30) is Claim.DONE


async def test_release_makes_the_key_claimable_again(store: Store) -> None:
    assert await store.claim("s", "b", lease=30) is Claim.CLAIMED
    await store.release("s", "b")
    assert await store.claim("s", "b", lease=30) is Claim.CLAIMED


async def test_release_never_undoes_a_done_marker(store: Store) -> None:
    assert await store.claim("s", "c", lease=30) is Claim.CLAIMED
    await store.complete("s", "c", ttl=None)
    await store.release("s", "c")
    assert await store.claim("s", "c", lease=30) is Claim.DONE


async def test_expired_lease_and_expired_marker_free_the_key(store: Store) -> None:
    assert await store.claim("s", "d", lease=0.05) is Claim.CLAIMED
    assert await store.claim("s", "e", lease=30) is Claim.CLAIMED
    await store.complete("s", "e", ttl=0.05)
    loop = asyncio.get_running_loop()
    end = loop.time() + 5
    # poll the condition itself: expiry is what is being tested
    while (await store.claim("s", "d", lease=30)) is not Claim.CLAIMED:
        assert loop.time() < end, "an expired lease was never freed"
        await asyncio.sleep(0.02)
    while (await store.claim("s", "e", lease=30)) is not Claim.CLAIMED:
        assert loop.time() < end, "an expired done marker was never forgotten"
        await asyncio.sleep(0.02)


async def test_sequences_only_move_forward(store: Store) -> None:
    assert await store.sequence("s", "acct-1") is None
    await store.advance("s", "acct-1", 5)
    await store.advance("s", "acct-1", 3)
    assert await store.sequence("s", "acct-1") == 5
    await store.advance("s", "acct-1", 9)
    assert await store.sequence("s", "acct-1") == 9
    assert await store.sequence("s", "acct-2") is None


async def test_counters_count_reset_and_expire(store: Store) -> None:
    assert [await store.incr("s", "m", ttl=60) for _ in range(3)] == [1, 2, 3]
    await store.reset("s", "m")
    assert await store.incr("s", "m", ttl=0.05) == 1
    loop = asyncio.get_running_loop()
    end = loop.time() + 5
    while await store.incr("s", "m", ttl=0.05) != 1:
        assert loop.time() < end, "an expired counter kept counting"
        await asyncio.sleep(0.1)


async def test_concurrent_claims_of_one_key_give_one_winner(store: Store) -> None:
    results = await asyncio.gather(*(store.claim("s", "race", lease=30) for _ in range(20)))
    assert results.count(Claim.CLAIMED) == 1
    assert results.count(Claim.BUSY) == 19


async def test_duplicates_are_processed_once_under_concurrency(store: Store) -> None:
    outcomes = await duplicates_processed_once(store)
    # the copies really raced: some found their twin's lease and were sent back
    assert outcomes["nack"] > 0
