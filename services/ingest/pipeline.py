"""The ingestor's pipeline: receive → batch → translate → write → acknowledge.

One thread (the caller of :meth:`Pipeline.run`) does everything after receipt, so batching, retrying
and acknowledging live in one place. A message is acknowledged only once the transaction holding its
readings (or its rejection record) has committed; until then the broker keeps it, and redelivers it if
the ingestor dies. While the database is down the same batch is retried with capped, jittered
back-off and nothing new is taken, so the MQTT in-flight window fills and the broker holds the rest.

A fault of the database itself is never acknowledged away: when the batch fails with an error that no
single message can cause (SYSTEMIC_CLASSES: schema, permissions, read-only, internal errors…), or every
message of it fails alone with the same error, the batch is held unacknowledged, retried with back-off
(new messages join it, up to the batch size), and reported (citysense_ingest_database_fault, /readyz).
A message is recorded as storage_error only when it fails while its batch-mates succeed.

Translation is pure (services/ingest/translate.py) over a registry snapshot; the pipeline keeps the
snapshot current: ids it has not seen are looked up (once per batch, all at once), the whole registry is
reloaded every REGISTRY_TTL, and devices the store found retired or deleted at write time are dropped.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field

import psycopg

from services.core.catalogue import Reason
from services.ingest.inbox import Inbox
from services.ingest.metrics import IngestMetrics
from services.ingest.translate import Envelope, Limits, device_ids, reject, translate
from services.store.ingest import IngestStore, Registry, digest
from services.store.model import Batch, RejectedRow, WriteResult
from services.store.pool import TransientError

log = logging.getLogger("citysense.ingest.pipeline")

#: SQLSTATE classes no single message can cause: syntax or access rule (42: a renamed column during an
#: upgrade, a revoked privilege), invalid transaction state (25: a read-only standby), feature not
#: supported (0A), internal errors (XX, TimescaleDB's included), PL/pgSQL raised (P0: a failing trigger),
#: invalid authorization (28), invalid catalog or schema name (3D, 3F), object not in prerequisite state (55).
SYSTEMIC_CLASSES = ("42", "25", "0A", "XX", "P0", "28", "3D", "3F", "55")


class SystemicFault(Exception):
    """The database refuses every write, whatever the message: the batch must be held, not acknowledged."""

    def __init__(self, exc: BaseException):
        self.sqlstate = getattr(exc, "sqlstate", None) or type(exc).__name__
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        super().__init__(f"{self.sqlstate}: {first}"[:300])


class _TooManyReadings(Exception):
    """The batch's messages hold more readings than a batch may: it is written in halves."""


def systemic(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None)
    return bool(state) and state[:2] in SYSTEMIC_CLASSES and state != "55P03"


@dataclass(frozen=True)
class PipelineConfig:
    batch_size: int = 500
    batch_age_s: float = 0.1
    #: A batch also ends at this many payload bytes: with payloads of at most max_payload_bytes and ten
    #: bytes at least per reading, it bounds a batch's readings too (4 MiB: some 400,000 at most).
    batch_max_bytes: int = 4 << 20
    #: A batch whose messages hold more readings than this is written in halves (one transaction each).
    batch_max_readings: int = 100_000
    limits: Limits = field(default_factory=Limits)
    retry_initial_s: float = 0.2
    retry_max_s: float = 30.0
    #: On shutdown, how long to keep retrying a batch the database will not take before leaving it
    #: unacknowledged (the broker redelivers it to the next run).
    shutdown_grace_s: float = 10.0


class RateLimitedLog:
    """Logs the first rejection of each reason, then at most one line per reason per interval with a
    count of those suppressed, so a misbehaving device cannot flood the logs."""

    def __init__(self, interval_s: float = 10.0):
        self._interval = interval_s
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def rejection(self, reason: str, topic: str, detail: str) -> None:
        now = time.monotonic()
        if now < self._next.get(reason, 0.0):
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        extra = self._suppressed.pop(reason, 0)
        more = f" (+{extra} more since the last report)" if extra else ""
        log.warning("rejected %s on %s: %s%s", reason, topic[:200], detail[:300], more)
        self._next[reason] = now + self._interval

    def exception(self, exc: BaseException, topic: str) -> None:
        """An unexpected error while handling one message: logged with its traceback, rate-limited."""
        now = time.monotonic()
        if now < self._next.get("internal_error:trace", 0.0):
            return
        self._next["internal_error:trace"] = now + self._interval
        log.error("internal error while handling a message on %s (the message is rejected as internal_error)",
                  topic[:200], exc_info=exc)


class Pipeline:
    #: Seconds between two full reloads of the device registry.
    REGISTRY_TTL = 60.0
    #: Seconds an unknown device id stays unknown before the store is asked again.
    UNKNOWN_DEVICE_TTL = 5.0

    def __init__(self, inbox: Inbox, store: IngestStore, ack, metrics: IngestMetrics,
                 config: PipelineConfig):
        self._inbox = inbox
        self._store = store
        self._ack = ack  # callable(list of envelopes), thread-safe
        self._metrics = metrics
        self._config = config
        self._stopping = threading.Event()
        self._rejection_log = RateLimitedLog()
        self._registry: Registry | None = None
        self._registry_until = 0.0
        self._unknown: dict[str, float] = {}
        self._next_fault_log = 0.0
        self._readings_received = metrics.messages.labels("readings")
        self._status_received = metrics.messages.labels("status")
        self.received = 0  # taken from the inbox
        self.acked = 0
        # Read at scrape time, so they stay true while the pipeline is blocked retrying a write.
        metrics.queued.set_function(inbox.qsize)
        metrics.inflight.set_function(lambda: self.received - self.acked + inbox.qsize())

    def stop(self) -> None:
        """Ask the pipeline to finish: it writes and acknowledges what it has already received, then returns."""
        self._stopping.set()

    # -- batching ---------------------------------------------------------------------------------
    def _collect(self, limit: int, wait: bool = True) -> list[Envelope]:
        """Up to ``limit`` messages, until the first of them is batch_age_s old (``wait``: for the first
        one too, a quarter of a second at most)."""
        if limit <= 0:
            return []
        try:
            first = self._inbox.get(timeout=0.25) if wait else self._inbox.get_nowait()
        except queue.Empty:
            return []
        batch = [first]
        size = len(first.payload)
        deadline = first.received_mono + self._config.batch_age_s
        while len(batch) < limit and size < self._config.batch_max_bytes:
            remaining = deadline - time.monotonic()
            try:
                env = self._inbox.get_nowait() if remaining <= 0 else self._inbox.get(timeout=remaining)
            except queue.Empty:
                break
            batch.append(env)
            size += len(env.payload)
        return batch

    def _drain(self) -> list[Envelope]:
        out = []
        while True:
            try:
                out.append(self._inbox.get_nowait())
            except queue.Empty:
                return out

    # -- registry ---------------------------------------------------------------------------------
    def _current_registry(self, envelopes: list[Envelope]) -> Registry:
        """The snapshot, reloaded when old, and taught the batch's ids it does not know (one query)."""
        now = time.monotonic()
        if self._registry is None or now > self._registry_until:
            self._registry = self._store.registry()
            self._registry_until = now + self.REGISTRY_TTL
            self._unknown.clear()
        reg = self._registry
        missing = [d for d in device_ids(envelopes) if d not in reg.devices and now >= self._unknown.get(d, 0.0)]
        if missing:
            found = self._store.device_keys(missing)
            for d in missing:
                if d not in found:
                    self._unknown[d] = now + self.UNKNOWN_DEVICE_TTL
            if len(self._unknown) > 100_000:
                self._unknown.clear()
            if found:
                self._registry = reg = Registry(reg.metrics, {**reg.devices, **found})
        return reg

    def _forget(self, device_ids_: tuple[str, ...]) -> None:
        """Drop devices the store found retired or deleted, and learn the new keys of those it found
        registered again."""
        remapped, self._store.remapped = self._store.remapped, {}
        if (device_ids_ or remapped) and self._registry is not None:
            devices = {k: v for k, v in self._registry.devices.items() if k not in device_ids_}
            self._registry = Registry(self._registry.metrics, {**devices, **remapped})

    def _first_deliveries(self, envelopes: list[Envelope]) -> None:
        """Redelivered copies (DUP) of messages already committed take their first delivery's time."""
        dups = {digest(e.topic, e.payload): e for e in envelopes if e.dup}
        if dups:
            for d, t in self._store.first_deliveries(list(dups)).items():
                dups[d].received_at = t

    def build(self, envelopes: list[Envelope]) -> Batch:
        """The batch for these messages (may raise TransientError while it refreshes the registry or
        looks up first deliveries)."""
        self._first_deliveries(envelopes)
        return translate(envelopes, self._current_registry(envelopes), self._config.limits, self._rejection_log.exception)

    # -- writing ------------------------------------------------------------------------------------
    def _write_with_retry(self, envelopes: list[Envelope]) -> WriteResult | None:
        """Translate and write the batch, retrying transient failures; None: given up during shutdown.
        Raises SystemicFault when the database refuses the batch whatever its messages."""
        delay = self._config.retry_initial_s
        give_up_at = None
        while True:
            try:
                batch = self.build(envelopes)
                if len(batch.readings) > self._config.batch_max_readings and len(envelopes) > 1:
                    raise _TooManyReadings
                try:
                    result = self._store.write(batch)
                except TransientError:
                    raise
                except psycopg.Error as exc:
                    if systemic(exc):
                        raise SystemicFault(exc) from exc
                    result = self._write_one_by_one(envelopes)
                except Exception:  # a bug: find the culprit message
                    result = self._write_one_by_one(envelopes)
                self._metrics.database_connected(True)
                self._forget(result.refused_devices)
                return result
            except TransientError as exc:
                self._metrics.database_connected(False)
                self._metrics.retries.inc()
                if self._stopping.is_set():
                    give_up_at = give_up_at or time.monotonic() + self._config.shutdown_grace_s
                    if time.monotonic() > give_up_at:
                        log.error("database still unavailable at shutdown; leaving %d messages unacknowledged "
                                  "for the broker to redeliver", len(envelopes))
                        return None
                log.warning("database unavailable (%s); retrying %d messages in %.1f s", exc, len(envelopes), delay)
                time.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self._config.retry_max_s)

    def _write_one_by_one(self, envelopes: list[Envelope]) -> WriteResult:
        """A batch the database refused for a reason that may be one message's: write each message alone.
        Those that fail while others succeed are recorded as storage_error; when every one fails alone
        with the same error, the fault is the database's (SystemicFault), and nothing is recorded."""
        log.error("batch of %d messages refused by the database; writing them one by one", len(envelopes))
        stored = duplicates = conflicts = 0
        rejections: list[RejectedRow] = []
        refused: list[str] = []
        failed: list[tuple[Envelope, BaseException]] = []
        limit = self._config.limits.rejected_payload_bytes
        for env in envelopes:
            try:
                r = self._store.write(self.build([env]))
            except TransientError:
                raise
            except psycopg.Error as exc:
                if systemic(exc):
                    raise SystemicFault(exc) from exc
                failed.append((env, exc))
                continue
            except Exception as exc:  # a value the store cannot handle: this message only
                self._rejection_log.exception(exc, env.topic)
                batch = Batch()
                reject(batch, env, next(iter(device_ids([env])), None), Reason.INTERNAL_ERROR,
                       f"{type(exc).__name__} while storing this message", limit)
                r = self._store.write(batch)
            stored += r.stored
            duplicates += r.duplicates
            conflicts += r.conflicts
            rejections.extend(r.rejections)
            refused.extend(r.refused_devices)
        if failed and len(failed) == len(envelopes) and len({getattr(e, "sqlstate", None) for _, e in failed}) == 1:
            raise SystemicFault(failed[0][1])
        for env, exc in failed:
            batch = Batch()
            reject(batch, env, next(iter(device_ids([env])), None), Reason.STORAGE_ERROR,
                   f"{type(exc).__name__}: {str(exc)[:200]}", limit)
            r = self._store.write(batch)
            rejections.extend(r.rejections)
        return WriteResult(stored, duplicates, conflicts, tuple(rejections), tuple(refused))

    def process(self, envelopes: list[Envelope]) -> list[Envelope]:
        """Write and acknowledge a batch of messages; returns those left unacknowledged (none when all went
        well; the rest at shutdown, or while a systemic fault holds them: the caller tries again later).
        A batch over batch_max_readings is written in halves, and no message is ever acknowledged twice."""
        m = self._metrics
        t0 = time.monotonic()
        try:
            result = self._write_with_retry(envelopes)
        except SystemicFault as fault:
            m.database_fault(True)
            self._fault_log(fault, len(envelopes))
            return envelopes
        except _TooManyReadings:
            half = len(envelopes) // 2
            rest = self.process(envelopes[:half])
            return rest + envelopes[half:] if rest else self.process(envelopes[half:])
        if result is None:
            return envelopes
        m.database_fault(False)
        done = time.monotonic()
        self._ack(envelopes)
        for env in envelopes:
            m.lag_seconds.observe(done - env.received_mono)
        self.acked += len(envelopes)
        m.write_seconds.observe(done - t0)
        m.batch_messages.observe(len(envelopes))
        m.stored.inc(result.stored)
        m.duplicates.inc(result.duplicates)
        m.conflicts.inc(result.conflicts)
        m.last_write.set(time.time())
        for r in result.rejections:
            m.rejections.labels(r.reason).inc()
            self._rejection_log.rejection(r.reason, r.topic, r.detail)
        return []

    def _fault_log(self, fault: SystemicFault, n: int) -> None:
        now = time.monotonic()
        if now >= self._next_fault_log:
            self._next_fault_log = now + 30.0
            log.error("the database refuses every write (%s): holding %d messages unacknowledged and retrying; "
                      "nothing is acknowledged or rejected until it takes them", fault, n)

    def _count_in(self, envelopes: list[Envelope]) -> None:
        self.received += len(envelopes)
        status = sum(1 for env in envelopes if env.topic.endswith("/status"))
        if status:
            self._status_received.inc(status)
        self._readings_received.inc(len(envelopes) - status)

    def run(self) -> None:
        """Loop until :meth:`stop`; then write and acknowledge what was already received, and return."""
        held: list[Envelope] = []
        delay = self._config.retry_initial_s
        while not self._stopping.is_set():
            if held:  # a systemic fault: back off, then try again with whatever has arrived meanwhile
                self._stopping.wait(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self._config.retry_max_s)
                new = self._collect(self._config.batch_size - len(held), wait=False)
            else:
                new = self._collect(self._config.batch_size)
            if new:
                self._count_in(new)
            envelopes = held + new
            if envelopes:
                held = self.process(envelopes)
                if not held:
                    delay = self._config.retry_initial_s
        if held:
            log.error("stopping with %d messages held by a database fault: unacknowledged, the broker redelivers "
                      "them", len(held))
            return
        rest = self._drain()
        if rest:
            self._count_in(rest)
            for i in range(0, len(rest), self._config.batch_size):
                if self.process(rest[i : i + self._config.batch_size]):
                    break
        log.info("pipeline stopped: %d messages received, %d acknowledged", self.received, self.acked)
