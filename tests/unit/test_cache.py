"""The answer cache: reuse within its time, one computation per key at a time, off when set to 0."""

import asyncio
import time

from services.api.cache import AnswerCache


def test_reuses_until_expiry_and_computes_once_under_a_burst():
    calls = []

    async def compute():
        calls.append(1)
        await asyncio.sleep(0.05)
        return len(calls)

    async def main():
        cache = AnswerCache(present_s=0.3)
        first = await asyncio.gather(*(cache.get("k", False, compute) for _ in range(20)))
        again = await cache.get("k", False, compute)
        time.sleep(0.35)
        later = await cache.get("k", False, compute)
        return first, again, later

    first, again, later = asyncio.run(main())
    assert first == [1] * 20 and again == 1 and later == 2


def test_zero_means_no_cache():
    n = []

    async def compute():
        n.append(1)
        return len(n)

    async def main():
        cache = AnswerCache(present_s=0)
        return [await cache.get("k", False, compute) for _ in range(3)]

    assert asyncio.run(main()) == [1, 2, 3]
