"""A small answer cache for the quality-of-life routes: their answers cost several queries and change
at most hourly. Answers about the present live ``CITYSENSE_API_CACHE_S`` seconds; answers about a past
moment an hour (late readings may still arrive for a while, so not forever)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from cachetools import TTLCache


class AnswerCache:
    def __init__(self, present_s: float, past_s: float = 3600.0, size: int = 2048):
        self._present = TTLCache(maxsize=size, ttl=present_s) if present_s > 0 else None
        self._past = TTLCache(maxsize=size, ttl=past_s) if present_s > 0 else None
        self._locks: dict[Any, asyncio.Lock] = {}

    async def get(self, key: Any, past: bool, compute: Callable[[], Awaitable[Any]]) -> Any:
        cache = self._past if past else self._present
        if cache is None:
            return await compute()
        if key in cache:
            return cache[key]
        # One computation per key at a time: a burst of identical requests waits for the first.
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in cache:
                return cache[key]
            value = await compute()
            cache[key] = value
        if len(self._locks) > 4096:
            self._locks.clear()
        return value
