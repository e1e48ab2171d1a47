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


class Clock:
    """Receipt times for readings that carry none, and for the accepted time window: this host's clock,
    corrected by its offset from the database's clock when that exceeds TOLERANCE_S (an ingestor whose
    clock drifted must not reject a whole city as time_in_future). Read by paho's thread, set by the
    housekeeping thread (a float assignment: atomic)."""

    TOLERANCE_S = 2.0

    def __init__(self):
        self.offset = 0.0

    def set_offset(self, offset: float) -> None:
        if abs(offset) > self.TOLERANCE_S and abs(offset - self.offset) > 0.5:
            log.warning("this host's clock is %.1f s %s the database's: correcting receipt times by it",
                        abs(offset), "behind" if offset > 0 else "ahead of")
        self.offset = offset if abs(offset) > self.TOLERANCE_S else 0.0

    def now(self) -> float:
        return time.time() + self.offset


class HousekeepingJob(threading.Thread):
    def __init__(self, housekeeping: Housekeeping, metrics: IngestMetrics, clock: Clock, every_s: float = 60.0,
                 retention: tuple[int, int, float] | None = None, retention_every_s: float = 3600.0):
        super().__init__(name="housekeeping", daemon=True)
        self._hk, self._metrics, self._clock, self._every = housekeeping, metrics, clock, every_s
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
        self.check_clock()
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

    def check_clock(self) -> None:
        offset = self._hk.clock_offset()
        self._metrics.clock_offset.set(offset)
        self._clock.set_offset(offset)
