"""Live mode: each device reports at its interval over its own MQTT 5 connection, with faults, outages
and backlogs as asked; ``backfill_s`` first publishes that much history as fast as the broker takes it."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from pathlib import Path

from services.broker.connect import Endpoint
from services.core.catalogue import device_topic
from services.core.settings import Settings
from simulators.devices import backlog, message
from simulators.faults import FaultRates
from simulators.fleet import SimDevice, load_fleet
from simulators.publisher import Fleet
from simulators.record import Recorder, fleet_path, stop_event
from simulators.registration import credentials_path, load_credentials, register_fleet
from simulators.signals import unit_noise

log = logging.getLogger("citysense.simulate")


def run(settings: Settings, duration_s: float | None = None, register: bool = True, *,
        rate: float | None = None, faults: FaultRates | None = None, record: str | None = None,
        backfill_s: float = 0.0, outage_rate: float = 0.0, outage_s: tuple[float, float] = (120.0, 600.0),
        fleet_file: Path | None | str = "default", stop: threading.Event | None = None) -> int:
    """Live mode. ``rate``: messages per second for the whole fleet (else each device every
    CITYSENSE_SIM_INTERVAL_S); ``outage_rate``: outages per device per hour, each lasting between
    ``outage_s`` seconds."""
    n, seed = settings.sim_devices, settings.sim_seed
    fleet = load_fleet(n, seed, fleet_path(settings, fleet_file))
    interval = n / rate if rate else settings.sim_interval_s
    faults = faults or FaultRates({})
    stop = stop or stop_event()
    recorder = Recorder(record)
    if register:
        new, creds = register_fleet(settings, fleet, min_interval_s=interval)
        log.info("fleet of %d devices (%d newly registered)", len(fleet), new)
    else:
        creds = load_credentials(credentials_path(settings))
    active = [d for d in fleet if not faults.is_silent(seed, d.device_id)]
    links = Fleet(Endpoint.of(settings), creds)
    for d in active:
        links.connect(links.add(d.device_id))
    log.info("%d devices connected (%d silent)", len(active), len(fleet) - len(active))

    start = time.time()
    if backfill_s > 0:
        _backfill(active, links, start, backfill_s, seed, recorder, stop)
    seq = {d.device_id: 0 for d in active}
    offline: dict[str, tuple[float, list[float]]] = {}  # device → (back at, buffered times)
    due = [(time.time() + interval * i / max(1, len(active)), i) for i in range(len(active))]
    heapq.heapify(due)
    end = None if duration_s is None else start + duration_s
    while not stop.is_set() and due:
        t, i = due[0]
        if end is not None and t > end:
            break
        while time.time() < t and not stop.is_set():
            links.pump(min(0.05, max(0.0, t - time.time())))
        if stop.is_set():
            break
        heapq.heapreplace(due, (t + interval, i))
        d = active[i]
        link = links.links[d.device_id]
        now = time.time()
        if d.device_id in offline:
            back_at, buffered = offline[d.device_id]
            if now < back_at:
                if "backlog" in d.quirks:
                    buffered.append(now)
                continue
            del offline[d.device_id]
            links.connect(link)
            if buffered:
                msg = backlog(d, buffered, seed)
                link.publish(msg)
                recorder(msg, now)
        elif outage_rate and _chance(seed, d.device_id, int(now / interval), outage_rate * interval / 3600):
            links.disconnect(link, with_will=True)
            low, high = outage_s
            offline[d.device_id] = (now + low + (high - low) * _chance_value(seed, d.device_id, now), [])
            continue
        msg = message(d, now, seq[d.device_id], seed, faults, interval_s=interval)
        seq[d.device_id] += 1
        link.publish(msg)
        recorder(msg, now)
    for device_id, (_, buffered) in offline.items():  # back online before leaving: nothing buffered is lost
        link = links.links[device_id]
        links.connect(link)
        if buffered:
            msg = backlog(next(d for d in active if d.device_id == device_id), buffered, seed)
            link.publish(msg)
            recorder(msg, time.time())
    ok = links.flush()
    for link in links.links.values():
        if link.online:
            link.client.publish(device_topic(link.device_id, "status"), "offline", qos=1, retain=True)
    links.close()
    recorder.close(refused_by_broker=links.refused)
    elapsed = max(1e-9, time.time() - start)
    log.info("simulator stopped: %d messages in %.0f s (%.1f/s); faults %s; refused by the broker %d; all acknowledged: %s",
             recorder.sent, elapsed, recorder.sent / elapsed, recorder.by_fault, links.refused, ok)
    return 0 if ok else 1


def _chance(seed: int, device_id: str, k: int, p: float) -> bool:
    return unit_noise(seed, "outage", device_id, k) < p


def _chance_value(seed: int, device_id: str, t: float) -> float:
    return unit_noise(seed, "outage-len", device_id, int(t))


def _backfill(fleet: list[SimDevice], links: Fleet, now: float, span_s: float, seed: int, recorder: Recorder,
              stop: threading.Event, per_message: int = 60) -> None:
    """History for every device from now − span to now at its own interval, as backlog messages."""
    for d in fleet:
        times = [now - span_s + k * d.interval_s for k in range(int(span_s // d.interval_s))]
        link = links.links[d.device_id]
        for i in range(0, len(times), per_message):
            msg = backlog(d, times[i:i + per_message], seed)
            link.publish(msg)
            recorder(msg, now)
        while links.unacknowledged() > 2000 and not stop.is_set():
            links.pump(0.05)
    links.flush(120)
    log.info("backfilled %.1f h for %d devices", span_s / 3600, len(fleet))


