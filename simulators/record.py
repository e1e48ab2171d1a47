"""What a simulator run sent (``--record``), the fleet file it runs, and how it is stopped."""

from __future__ import annotations

import json
import signal
import threading

from services.core.settings import Settings
from simulators.faults import Message


def fleet_path(settings: Settings, fleet_file):
    """``"default"``: the settings' fleet file, else the one shipped with citysense; None: build it."""
    from simulators.fleet import FLEET_FILE

    if fleet_file != "default":
        return fleet_file
    if settings.sim_fleet_file is not None:
        if not settings.sim_fleet_file.is_file():
            raise SystemExit(f"citysense simulate: CITYSENSE_SIM_FLEET_FILE {settings.sim_fleet_file} is not a file")
        return settings.sim_fleet_file
    return FLEET_FILE


class Recorder:
    """What was sent, one JSON line per message (or nothing, without a path)."""

    def __init__(self, path: str | None):
        self._f = open(path, "a", encoding="utf-8") if path else None
        self.sent = 0
        self.by_fault: dict[str, int] = {}

    def __call__(self, msg: Message, t: float) -> None:
        self.sent += msg.copies
        key = msg.fault or "none"
        self.by_fault[key] = self.by_fault.get(key, 0) + 1
        if self._f:
            self._f.write(json.dumps({"t": round(t, 3), "topic": msg.topic, "device_id": msg.device_id,
                                      "fault": msg.fault, "stored": msg.stored, "rejected": msg.rejected,
                                      "copies": msg.copies, "backlog": msg.backlog, "bytes": len(msg.payload),
                                      "refused": msg.refused}) + "\n")

    def close(self, refused_by_broker: int | None = None) -> None:
        """``refused_by_broker``: publishes the broker answered with Not authorized (a last summary line)."""
        if self._f:
            if refused_by_broker is not None:
                self._f.write(json.dumps({"summary": {"refused_by_broker": refused_by_broker}}) + "\n")
            self._f.close()


def stop_event() -> threading.Event:
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


