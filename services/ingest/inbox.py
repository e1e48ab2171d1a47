"""The queue between paho's network thread and the pipeline, bounded in bytes.

QoS 1 messages are bounded by the in-flight window (MQTT 5 Receive Maximum) and each holds at most the
payload limit in memory (a larger payload is cut at receipt, keeping its length and its SHA-256: it can
only become a too_large rejection). QoS 0 messages bypass the window: beyond ``max_bytes`` they are
dropped and counted, since the broker would never redeliver them anyway.
"""

from __future__ import annotations

import queue
import threading

from services.ingest.translate import Envelope
from services.store.ingest import digest


class Inbox:
    def __init__(self, max_bytes: int, on_drop=lambda env: None):
        self._queue: queue.SimpleQueue[Envelope] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._bytes = 0
        self.max_bytes = max_bytes
        self._on_drop = on_drop

    @property
    def bytes(self) -> int:
        return self._bytes

    def put(self, env: Envelope) -> bool:
        """Queue a message; False when it was dropped (QoS 0 over the byte budget)."""
        size = len(env.payload)
        with self._lock:
            if env.qos == 0 and self._bytes + size > self.max_bytes:
                dropped = True
            else:
                dropped = False
                self._bytes += size
        if dropped:
            self._on_drop(env)
            return False
        self._queue.put(env)
        return True

    def _taken(self, env: Envelope) -> Envelope:
        with self._lock:
            self._bytes -= len(env.payload)
        return env

    def get(self, timeout: float | None = None) -> Envelope:
        return self._taken(self._queue.get(timeout=timeout))

    def get_nowait(self) -> Envelope:
        return self._taken(self._queue.get_nowait())

    def qsize(self) -> int:
        return self._queue.qsize()


def cut(topic: str, payload: bytes, limit: int, keep: int) -> tuple[bytes, int, bytes | None]:
    """(payload to hold, its real length, the message's digest when cut): a payload over ``limit`` bytes
    is cut to ``keep`` bytes at receipt; its identity stays that of the whole message."""
    if len(payload) <= limit:
        return payload, len(payload), None
    return payload[:keep], len(payload), digest(topic, payload)
