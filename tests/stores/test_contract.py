"""The store contract, the same for every store, on the real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio

from polybus.stores import Claim, Store
from polybus.stores.base import ReportsRemainingLease, UncountingStore

from .scenarios import dead_holder_defers_then_runs, duplicates_processed_once


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


async def test_a_busy_claim_reports_the_remaining_lease(store: Store) -> None:
    assert isinstance(store, ReportsRemainingLease)
    first = await store.try_claim("s", "f", lease=30)
    assert first.claim is Claim.CLAIMED
    assert first.remaining is None
    busy = await store.try_claim("s", "f", lease=30)
    assert busy.claim is Claim.BUSY
    assert busy.remaining is not None
    # the holder's lease (30 s), not the asker's, and only a little of it used up
    assert 20 < busy.remaining <= 30
    await store.complete("s", "f", ttl=None)
    done = await store.try_claim("s", "f", lease=30)
    assert (done.claim, done.remaining) == (Claim.DONE, None)


async def test_a_short_lease_reports_a_short_remainder(store: Store) -> None:
    assert isinstance(store, ReportsRemainingLease)
    assert (await store.try_claim("s", "g", lease=2.0)).claim is Claim.CLAIMED
    busy = await store.try_claim("s", "g", lease=60)
    assert busy.claim is Claim.BUSY
    assert busy.remaining is not None
    assert 0 <= busy.remaining <= 2.0


async def test_decr_takes_back_one_count_and_never_goes_below_zero(store: Store) -> None:
    assert isinstance(store, UncountingStore)
    assert await store.decr("s", "absent") == 0
    assert [await store.incr("s", "n", ttl=60) for _ in range(2)] == [1, 2]
    assert await store.decr("s", "n") == 1
    assert await store.incr("s", "n", ttl=60) == 2
    assert await store.decr("s", "n") == 1
    assert await store.decr("s", "n") == 0
    assert await store.decr("s", "n") == 0
    assert await store.incr("s", "n", ttl=60) == 1
    await store.reset("s", "n")
    assert await store.decr("s", "n") == 0


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


async def test_a_dead_holders_lease_costs_one_deferral_not_the_poison_limit(
    store: Store,
) -> None:
    deliveries, deferrals = await dead_holder_defers_then_runs(store)
    # deferred for the remaining lease: one deferral, a second only if the store's
    # clock and the broker's disagree by more than the margin; never the limit (3)
    assert 1 <= deferrals <= 2
    assert deliveries == deferrals + 1
