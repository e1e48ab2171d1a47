"""Translate received messages into one batch for the store: topic → device → decode → validate. Pure:
it reads a registry snapshot and touches no database, so a retry or a split re-runs it at no cost.

A reading without a device time takes the message's delivery time. A redelivered copy takes its first
delivery's time (the pipeline sets ``received_at`` from the message's receipt), so it is stored once.

Every message ends as readings, a status change or a rejection with a precise reason, whatever its bytes:
an unexpected error while handling one message rejects that message as internal_error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.core.catalogue import Reason
from services.ingest.decode import Rejected, decode_readings, decode_status, parse_topic
from services.ingest.validate import Window, summarise, validate
from services.store.ingest import Registry, digest
from services.store.model import FLAG_TIME_ASSUMED, Batch, RejectedRow, StatusChange


# Not frozen: built once per message on the hot path, and frozen dataclasses construct ~4x slower.
@dataclass(slots=True)
class Envelope:
    """One received message, as the pipeline sees it."""

    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: float  # wall clock, epoch seconds: the time of readings that carry none
    received_mono: float  # monotonic: batch age and lag
    content_type: str | None
    connection: int = 0  # which broker connection delivered it: an ack is valid on that connection only
    dup: bool = False  # MQTT DUP: a redelivery of a message sent before (it may be stored already)
    retain: bool = False
    size: int = -1  # the payload's length as sent (-1: len(payload)); larger when it was cut at receipt
    whole_digest: bytes | None = None  # sha256 of the whole payload, when it was cut

    @property
    def length(self) -> int:
        return self.size if self.size >= 0 else len(self.payload)


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int = 65536
    max_readings: int = 2000
    window: Window = Window(30 * 86400, 300)
    #: rejected payloads are stored cut to this many bytes (with their length and hash)
    rejected_payload_bytes: int = 4096


def device_ids(envelopes: list[Envelope]) -> set[str]:
    """The device ids the messages' topics name (well-formed topics only)."""
    out = set()
    for env in envelopes:
        try:
            out.add(parse_topic(env.topic).device_id)
        except Rejected:
            pass
    return out


def reject(batch: Batch, env: Envelope, device_id: str | None, reason: str, detail: str, keep: int) -> None:
    """Record a rejection: the payload cut to ``keep`` bytes, with its length and (via the digest of the
    whole) its identity."""
    payload = env.payload[:keep]
    if env.length > len(payload):
        detail += f" (payload of {env.length} bytes, the first {len(payload)} kept)"
    batch.rejected.append(RejectedRow(env.received_at, env.topic, device_id, payload, reason, detail,
                                      env.length, env.whole_digest or digest(env.topic, env.payload)))


def translate(envelopes: list[Envelope], registry: Registry, limits: Limits,
              on_internal_error: Callable[[BaseException, str], None] = lambda exc, topic: None) -> Batch:
    batch = Batch()
    metrics = registry.metrics
    for env in envelopes:
        device_id = None
        try:
            topic = parse_topic(env.topic)
            device_id = topic.device_id
            device_key = registry.device_key(device_id)
            if device_key is None:
                raise Rejected(Reason.UNKNOWN_DEVICE, f"device {device_id!r} is not registered (or is retired)")
            if env.retain:
                raise Rejected(Reason.RETAINED, "a retained message on a device topic: it would be replayed to every "
                                                "new subscriber as if new; publish readings and statuses unretained")
            if env.length > limits.max_payload_bytes:
                raise Rejected(Reason.TOO_LARGE, f"payload of {env.length} bytes exceeds the limit of "
                                                 f"{limits.max_payload_bytes}")
            if topic.channel == "status":
                batch.statuses.append(StatusChange(device_key, decode_status(env.payload), env.received_at))
                continue
            candidates = decode_readings(env.payload, env.received_at, device_id, content_type=env.content_type,
                                         max_bytes=limits.max_payload_bytes, max_readings=limits.max_readings)
            verdict = validate(candidates, device_key, metrics, env.received_at, limits.window, len(batch.messages))
        except Rejected as r:
            reject(batch, env, device_id, r.reason, r.detail, limits.rejected_payload_bytes)
            continue
        except Exception as exc:  # a bug must cost one message, never the pipeline thread
            on_internal_error(exc, env.topic)
            reject(batch, env, device_id, Reason.INTERNAL_ERROR, f"{type(exc).__name__} while handling this message",
                   limits.rejected_payload_bytes)
            continue
        if verdict.readings:
            batch.readings.extend(verdict.readings)
            # the payload itself (no copy, no hash): the store cuts and hashes it only if it records a refusal
            batch.messages.append(RejectedRow(env.received_at, env.topic, device_id, env.payload, "", "", env.length,
                                              env.whole_digest))
            if any(r.flags & FLAG_TIME_ASSUMED for r in verdict.readings):
                batch.receipts.append((digest(env.topic, env.payload), env.received_at))
        for r in summarise(verdict.rejections):
            reject(batch, env, device_id, r.reason, r.detail, limits.rejected_payload_bytes)
    return batch
