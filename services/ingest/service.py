"""``citysense ingest``: wire settings, database writer, MQTT subscriber and pipeline, and run them.

Lifecycle: the sink opens first (the database, whose catalogue validation needs), then the metrics
endpoint, then the source (MQTT). On SIGTERM or SIGINT the pipeline stops taking new messages,
writes and acknowledges what it holds, and only then does the MQTT client disconnect; exit status 0.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading

from services.core.settings import Settings
from services.ingest import http
from services.ingest.metrics import IngestMetrics
from services.ingest.mqtt import Subscriber
from services.ingest.pipeline import Pipeline, PipelineConfig
from services.ingest.rollups import RollupJob
from services.ingest.validate import Window
from services.ingest.writer import TransientError, Writer

log = logging.getLogger("citysense.ingest")


def pipeline_config(settings: Settings) -> PipelineConfig:
    return PipelineConfig(
        batch_size=settings.ingest_batch_size,
        batch_age_s=settings.ingest_batch_age_ms / 1000,
        max_payload_bytes=settings.ingest_max_payload_bytes,
        max_readings=settings.ingest_max_readings_per_message,
        window=Window(settings.ingest_max_past_s, settings.ingest_max_future_s),
        retry_max_s=settings.ingest_retry_max_s,
        retention_days=settings.retention_raw_days,
    )


def run(settings: Settings) -> int:
    metrics = IngestMetrics()
    writer = Writer(settings.dsn)
    stop = threading.Event()

    def on_signal(signum, frame):
        log.info("received %s: finishing the current work", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # First, so operators see the ingestor (and that it is not ready) while it waits for the database.
    server = None
    if settings.ingest_metrics_port:
        server = http.start(settings.ingest_metrics_host, settings.ingest_metrics_port, metrics.registry, metrics.readiness)

    delay = 0.5
    while not stop.is_set():
        try:
            writer.connect()
            metrics.database_connected(True)
            break
        except TransientError as exc:
            metrics.database_connected(False)
            log.warning("waiting for the database: %s", exc)
            stop.wait(delay)
            delay = min(delay * 2, settings.ingest_retry_max_s)
    if stop.is_set():
        return 0

    inbox: queue.SimpleQueue = queue.SimpleQueue()
    subscriber = Subscriber(settings, inbox, metrics)
    pipeline = Pipeline(inbox, writer, subscriber.ack, metrics, pipeline_config(settings))
    worker = threading.Thread(target=pipeline.run, name="pipeline", daemon=True)
    rollups = RollupJob(settings.dsn, settings.rollup_interval_s, metrics)
    subscriber.start()
    worker.start()
    rollups.start()
    log.info("ingesting from %s as client %r", settings.mqtt_url, settings.ingest_client_id)
    while not stop.wait(0.5):
        if not worker.is_alive():
            log.error("the pipeline thread died; exiting so a supervisor restarts the ingestor")
            subscriber.stop()
            return 1
    rollups.stop()
    pipeline.stop()
    worker.join()
    subscriber.stop()  # paho sends the queued acknowledgements before its DISCONNECT
    writer.close()
    if server is not None:
        server.shutdown()
    return 0
