"""The ingestor's Prometheus metrics. No device id is ever a label: a city has thousands of devices,
and a label per device would multiply every series by that many."""

from __future__ import annotations

from services.core.catalogue import Reason
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REJECTION_REASONS = tuple(Reason)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        p = "citysense_ingest_"
        self.messages = Counter(p + "messages_received", "MQTT messages received", ["channel"], registry=r)
        self.stored = Counter(p + "readings_stored", "Readings committed to the database", registry=r)
        self.duplicates = Counter(
            p + "readings_duplicate", "Readings already stored (redelivered or sent twice): not stored again", registry=r
        )
        self.conflicts = Counter(
            p + "readings_conflicting", "Readings whose (device, metric, time) already held another value: not stored, "
            "recorded as conflicting_duplicate", registry=r)
        self.rejections = Counter(p + "rejections", "Rejected messages and readings, by reason", ["reason"], registry=r)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
        self.batch_messages = Histogram(
            p + "batch_messages", "Messages per written batch", registry=r,
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000),
        )
        self.write_seconds = Histogram(
            p + "write_seconds", "Time to write and commit one batch", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.lag_seconds = Histogram(
            p + "lag_seconds", "From a message's receipt to the commit of its readings", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.broker = Gauge(
            "citysense_broker", "The broker's own $SYS counters, as it last published them: publish_messages_dropped "
            "(messages it dropped: queue caps, oversized), store_messages and store_bytes (held), clients_connected",
            ["stat"], registry=r)
        self.takeovers = Counter(
            p + "session_takeovers", "Times the broker gave this ingestor's session to another client with its client id",
            registry=r)
        self.clock_offset = Gauge(
            p + "clock_offset_seconds", "The database's clock minus this host's (receipt times are corrected by it "
            "beyond 2 s)", registry=r)
        self.dropped = Counter(
            p + "messages_dropped", "Messages dropped unread: QoS 0 beyond the inbox's byte budget (the broker "
            "never redelivers QoS 0)", ["reason"], registry=r)
        self.dropped.labels("inbox_full")
        self.inbox_bytes = Gauge(p + "inbox_bytes", "Payload bytes received and not yet taken into a batch", registry=r)
        self.inflight = Gauge(p + "inflight_messages", "Messages received and not yet acknowledged", registry=r)
        self.queued = Gauge(p + "queued_messages", "Messages waiting for the next batch", registry=r)
        self.broker_up = Gauge(p + "broker_connected", "1 while connected to the MQTT broker", registry=r)
        self.database_up = Gauge(p + "database_connected", "1 while the last database operation succeeded", registry=r)
        self.last_write = Gauge(
            p + "last_write_timestamp_seconds", "Unix time of the last successful commit", registry=r
        )
        self.retries = Counter(p + "write_retries", "Batch writes retried after a transient database error", registry=r)
        self.devices_registered = Gauge("citysense_devices_registered", "Devices in the registry", registry=r)
        self.devices_silent = Gauge(
            "citysense_devices_silent", "Registered devices that have not reported within twice their interval", registry=r
        )
        self.fault = Gauge(
            p + "database_fault", "1 while the database refuses every write (schema, permissions, read-only…): batches "
            "are held unacknowledged", registry=r)
        self._connected = {"broker_connected": False, "database_connected": False, "database_writable": True}
        self.broker_connected(False)
        self.database_connected(False)

    def broker_connected(self, up: bool) -> None:
        self._connected["broker_connected"] = up
        self.broker_up.set(1 if up else 0)

    def database_connected(self, up: bool) -> None:
        self._connected["database_connected"] = up
        self.database_up.set(1 if up else 0)

    def database_fault(self, fault: bool) -> None:
        self._connected["database_writable"] = not fault
        self.fault.set(1 if fault else 0)

    def readiness(self) -> dict[str, bool]:
        """The checks behind /readyz: ready when connected to both the broker and the database, and the
        database takes writes."""
        return dict(self._connected)
