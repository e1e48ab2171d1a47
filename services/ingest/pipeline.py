"""The ingestor's pipeline: receive → batch → decode and validate → write → acknowledge.

One thread (the caller of :meth:`Pipeline.run`) does everything after receipt, so batching, retrying
and acknowledging live in one place. A message is acknowledged only once the transaction holding its
readings (or its rejection record) has committed; until then the broker keeps it, and redelivers it if
the ingestor dies. While the database is down the same batch is retried with capped, jittered
back-off and nothing new is taken, so the MQTT in-flight window fills and the broker holds the rest.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass

import psycopg

from services.ingest.decode import Rejected, decode_readings, decode_status, parse_topic
from services.ingest.metrics import IngestMetrics
from services.ingest.mqtt import Envelope
from services.ingest.validate import Window, summarise, validate
from services.ingest.writer import Batch, RejectedRow, StatusChange, TransientError, WriteResult, Writer

log = logging.getLogger("citysense.ingest.pipeline")


@dataclass(frozen=True)
class PipelineConfig:
    batch_size: int = 500
    batch_age_s: float = 0.1
    max_payload_bytes: int = 65536
    max_readings: int = 2000
    window: Window = Window(30 * 86400, 300)
    retry_initial_s: float = 0.2
    retry_max_s: float = 30.0
    #: On shutdown, how long to keep retrying a batch the database will not take before leaving it
    #: unacknowledged (the broker redelivers it to the next run).
    shutdown_grace_s: float = 10.0
    retention_days: int | None = None
    retention_every_s: float = 3600.0


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
        log.warning("rejected %s on %s: %s%s", reason, topic, detail[:300], more)
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
    def __init__(self, inbox: "queue.SimpleQueue[Envelope]", writer: Writer, ack, metrics: IngestMetrics, config: PipelineConfig):
        self._inbox = inbox
        self._writer = writer
        self._ack = ack  # callable(mid, qos), thread-safe
        self._metrics = metrics
        self._config = config
        self._stopping = threading.Event()
        self._rejection_log = RateLimitedLog()
        self._next_retention = time.monotonic() + 60.0
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
    def _collect(self) -> list[Envelope]:
        try:
            first = self._inbox.get(timeout=0.25)
        except queue.Empty:
            return []
        batch = [first]
        deadline = first.received_mono + self._config.batch_age_s
        while len(batch) < self._config.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._inbox.get_nowait() if remaining <= 0 else self._inbox.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _drain(self) -> list[Envelope]:
        out = []
        while True:
            try:
                out.append(self._inbox.get_nowait())
            except queue.Empty:
                return out

    # -- decode and validate ------------------------------------------------------------------------
    def _reject(self, batch: Batch, env: Envelope, device_id: str | None, reason: str, detail: str) -> None:
        payload = env.payload[: self._config.max_payload_bytes]
        if len(env.payload) > len(payload):
            detail += f" (payload truncated to {len(payload)} bytes in this record)"
        batch.rejected.append(RejectedRow(env.received_at, env.topic, device_id, payload, reason, detail))

    def build(self, envelopes: list[Envelope]) -> Batch:
        """Turn received messages into one batch of readings, rejections and status changes. Consults the
        device registry (so it may raise TransientError); otherwise pure."""
        batch = Batch()
        metrics = self._writer.metrics
        cfg = self._config
        for env in envelopes:
            device_id = None
            try:
                topic = parse_topic(env.topic)
                device_id = topic.device_id
                device_key = self._writer.device_key(device_id)
                if device_key is None:
                    raise Rejected("unknown_device", f"device {device_id!r} is not registered")
                if topic.channel == "status":
                    status = decode_status(env.payload)
                    batch.statuses.append(StatusChange(device_key, status, env.received_at))
                    continue
                candidates = decode_readings(
                    env.payload, env.received_at, device_id,
                    content_type=env.content_type, max_bytes=cfg.max_payload_bytes, max_readings=cfg.max_readings,
                )
                verdict = validate(candidates, device_key, metrics, env.received_at, cfg.window)
            except Rejected as r:
                self._reject(batch, env, device_id, r.reason, r.detail)
                continue
            except (TransientError, psycopg.Error):
                raise  # the database, not the message: never recorded against the message
            except Exception as exc:  # a bug must cost one message, never the pipeline thread
                self._internal_error(batch, env, device_id, exc)
                continue
            batch.readings.extend(verdict.readings)
            for r in summarise(verdict.rejections):
                self._reject(batch, env, device_id, r.reason, r.detail)
        return batch

    def _internal_error(self, batch: Batch, env: Envelope, device_id: str | None, exc: BaseException) -> None:
        self._rejection_log.exception(exc, env.topic)
        self._reject(batch, env, device_id, "internal_error", f"{type(exc).__name__} while handling this message")

    # -- writing ------------------------------------------------------------------------------------
    def _write_with_retry(self, envelopes: list[Envelope]) -> tuple[WriteResult, list[RejectedRow]] | None:
        """Build and write the batch, retrying transient failures; returns what was written and the
        rejections recorded. None: given up during shutdown."""
        delay = self._config.retry_initial_s
        give_up_at = None
        while True:
            try:
                batch = self.build(envelopes)
                try:
                    result, rejected = self._writer.write(batch), batch.rejected
                except TransientError:
                    raise
                except Exception:  # the database refused the batch, or a bug: find the culprit message
                    result, rejected = self._write_one_by_one(envelopes)
                self._metrics.database_connected(True)
                return result, rejected
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

    def _write_one_by_one(self, envelopes: list[Envelope]) -> tuple[WriteResult, list[RejectedRow]]:
        """A batch the database refused for a reason that is not transient: write each message alone,
        and record the ones that still fail as rejected (reason storage_error), so one bad message
        cannot block the fleet."""
        log.error("batch of %d messages refused by the database; writing them one by one", len(envelopes))
        stored = duplicates = 0
        rejected: list[RejectedRow] = []
        for env in envelopes:
            batch = self.build([env])
            try:
                r = self._writer.write(batch)
            except TransientError:
                raise
            except psycopg.Error as exc:
                batch = Batch()
                self._reject(batch, env, None, "storage_error", f"{type(exc).__name__}: {str(exc)[:200]}")
                r = self._writer.write(batch)
            except Exception as exc:  # a value the writer cannot handle: this message only
                batch = Batch()
                self._internal_error(batch, env, None, exc)
                r = self._writer.write(batch)
            stored += r.stored
            duplicates += r.duplicates
            rejected.extend(batch.rejected)
        return WriteResult(stored, duplicates, len(rejected)), rejected

    def process(self, envelopes: list[Envelope]) -> bool:
        """Write and acknowledge one batch of messages. False when it could not be written."""
        m = self._metrics
        t0 = time.monotonic()
        written = self._write_with_retry(envelopes)
        if written is None:
            return False
        result, rejected = written
        done = time.monotonic()
        for env in envelopes:
            self._ack(env.mid, env.qos)
            m.lag_seconds.observe(done - env.received_mono)
        self.acked += len(envelopes)
        m.write_seconds.observe(done - t0)
        m.batch_messages.observe(len(envelopes))
        m.stored.inc(result.stored)
        m.duplicates.inc(result.duplicates)
        m.last_write.set(time.time())
        for r in rejected:
            m.rejections.labels(r.reason).inc()
            self._rejection_log.rejection(r.reason, r.topic, r.detail)
        return True

    def _count_in(self, envelopes: list[Envelope]) -> None:
        self.received += len(envelopes)
        status = sum(1 for env in envelopes if env.topic.endswith("/status"))
        if status:
            self._status_received.inc(status)
        self._readings_received.inc(len(envelopes) - status)

    def run(self) -> None:
        """Loop until :meth:`stop`; then write and acknowledge what was already received, and return."""
        while not self._stopping.is_set():
            envelopes = self._collect()
            if envelopes:
                self._count_in(envelopes)
                self.process(envelopes)
            self._maybe_apply_retention()
        rest = self._drain()
        if rest:
            self._count_in(rest)
            for i in range(0, len(rest), self._config.batch_size):
                if not self.process(rest[i : i + self._config.batch_size]):
                    break
        log.info("pipeline stopped: %d messages received, %d acknowledged", self.received, self.acked)

    def _maybe_apply_retention(self) -> None:
        if self._config.retention_days is None or time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + self._config.retention_every_s
        try:
            n = self._writer.drop_old_chunks(self._config.retention_days)
            if n:
                log.info("retention: dropped %d chunks older than %d days", n, self._config.retention_days)
        except (TransientError, psycopg.Error) as exc:
            log.warning("retention skipped this time: %s", exc)
