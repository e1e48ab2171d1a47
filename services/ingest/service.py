"""``citysense ingest``: wire settings, store, MQTT subscriber, pipeline and housekeeping, and run them.

Lifecycle: the HTTP endpoint (metrics, health) first, so operators see the ingestor while it waits; then
the sink (the database, whose catalogue validation needs), then the source (MQTT). On SIGTERM or SIGINT
the pipeline stops taking new messages, writes and acknowledges what it holds, and only then does the
MQTT client disconnect; exit status 0.
"""

from __future__ import annotations

import logging
import signal
import threading

from services.core.settings import Settings
from services.ingest import http
from services.ingest.housekeeping import Clock, HousekeepingJob
from services.ingest.inbox import Inbox
from services.ingest.metrics import IngestMetrics
from services.broker.connect import BrokerUnverified
from services.ingest.mqtt import Subscriber
from services.ingest.pipeline import Pipeline, PipelineConfig
from services.ingest.translate import Limits
from services.ingest.validate import Window
from services.store.ingest import Housekeeping, IngestStore
from services.store.pool import TransientError

log = logging.getLogger("citysense.ingest")


def pipeline_config(settings: Settings) -> PipelineConfig:
    return PipelineConfig(
        batch_size=settings.ingest_batch_size,
        batch_age_s=settings.ingest_batch_age_ms / 1000,
        batch_max_bytes=settings.ingest_batch_max_bytes,
        batch_max_readings=settings.ingest_batch_max_readings,
        limits=Limits(settings.ingest_max_payload_bytes, settings.ingest_max_readings_per_message,
                      Window(settings.ingest_max_past_s, settings.ingest_max_future_s),
                      settings.ingest_rejected_payload_bytes),
        retry_max_s=settings.ingest_retry_max_s,
    )


def run(settings: Settings) -> int:
    metrics = IngestMetrics()
    stop = threading.Event()

    def on_signal(signum, frame):
        log.info("received %s: finishing the current work", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = None
    if settings.ingest_metrics_port:
        server = http.start(settings.ingest_metrics_host, settings.ingest_metrics_port, metrics.registry, metrics.readiness)

    store = IngestStore(settings.dsn, settings.timezone, settings.ingest_rejected_payload_bytes)
    delay = 0.5
    while not stop.is_set():
        try:
            registry = store.registry()
            metrics.database_connected(True)
            log.info("database connected: %d metrics, %d devices", len(registry.metrics), len(registry.devices))
            break
        except TransientError as exc:
            metrics.database_connected(False)
            log.warning("waiting for the database: %s", exc)
            stop.wait(delay)
            delay = min(delay * 2, settings.ingest_retry_max_s)
    if stop.is_set():
        store.close()
        return 0

    clock = Clock()
    inbox = Inbox(settings.ingest_inbox_max_bytes, on_drop=lambda env: metrics.dropped.labels("inbox_full").inc())
    metrics.inbox_bytes.set_function(lambda: inbox.bytes)
    subscriber = Subscriber(settings, inbox, metrics, clock.now)
    pipeline = Pipeline(inbox, store, subscriber.ack, metrics, pipeline_config(settings))
    worker = threading.Thread(target=pipeline.run, name="pipeline", daemon=True)
    housekeeping = HousekeepingJob(Housekeeping(store, settings.timezone), metrics, clock, settings.rollup_interval_s,
                                   (settings.retention_raw_days, settings.retention_rejected_days,
                                    max(settings.ingest_session_expiry_s, 86400)))
    try:  # before the first message: receipt times are right from the start
        housekeeping.check_clock()
    except TransientError as exc:
        log.warning("could not compare clocks with the database yet: %s", exc)
    try:
        subscriber.start()
    except BrokerUnverified as exc:
        log.error("%s", exc)
        store.close()
        if server is not None:
            server.shutdown()
        return 2
    worker.start()
    housekeeping.start()
    log.info("ingesting from %s as client %r", settings.mqtt_url, settings.client_id)
    while not stop.wait(0.5):
        if not worker.is_alive():
            log.error("the pipeline thread died; exiting so a supervisor restarts the ingestor")
            subscriber.stop()
            return 1
    housekeeping.stop()
    pipeline.stop()
    worker.join()
    subscriber.stop()  # paho sends the queued acknowledgements before its DISCONNECT
    store.close()
    if server is not None:
        server.shutdown()
    return 0
