"""The ingestor's housekeeping thread: daily rollups and fleet freshness about once a minute, retention
about once an hour. Off the pipeline thread, so none of it ever delays a write; any error, of the
database or not, is logged and the work is tried again next round (the thread never dies)."""

from __future__ import annotations

import logging
import threading
import time

from services.ingest.metrics import IngestMetrics
from services.store.ingest import Housekeeping
from services.store.pool import TransientError

log = logging.getLogger("citysense.ingest.housekeeping")


class HousekeepingJob(threading.Thread):
    def __init__(self, housekeeping: Housekeeping, metrics: IngestMetrics, every_s: float = 60.0,
                 retention: tuple[int, int, float] | None = None, retention_every_s: float = 3600.0):
        super().__init__(name="housekeeping", daemon=True)
        self._hk, self._metrics, self._every = housekeeping, metrics, every_s
        self._retention, self._retention_every = retention, retention_every_s
        self._next_retention = time.monotonic() + min(60.0, retention_every_s)
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.round()
            except TransientError as exc:
                log.warning("housekeeping skipped this round: %s", exc)
            except Exception:  # noqa: BLE001 - logged with its traceback; the thread must live on
                log.exception("housekeeping failed this round; trying again in %.0f s", self._every)

    def round(self) -> None:
        while (n := self._hk.refresh_daily()) and not self._stop.is_set():
            log.info("daily rollups recomputed for %d days", n)
        registered, silent = self._hk.fleet()
        self._metrics.devices_registered.set(registered)
        self._metrics.devices_silent.set(silent)
        if self._retention and time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + self._retention_every
            n = self._hk.apply_retention(*self._retention[:2], receipts_s=self._retention[2])
            if n:
                log.info("retention: dropped %d chunks or rows older than %s days", n, self._retention)
