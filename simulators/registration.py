"""Registering the simulated fleet, through the store's registry (as the API's admin route does)."""

from __future__ import annotations

from services.core.areas import OutsideCity, baltimore
from services.store.devices import Placed, register_many
from simulators.fleet import SimDevice


def register_fleet(dsn: str, fleet: list[SimDevice], min_interval_s: float = 0) -> int:
    """Register the fleet's devices (those not yet registered); returns how many were new."""
    city = baltimore()
    rows = []
    for d in fleet:
        try:
            loc = city.locate(d.latitude, d.longitude)
        except OutsideCity:
            continue
        rows.append(({"device_id": d.device_id, "kind": d.kind, "interval_s": int(max(d.interval_s, min_interval_s)),
                      "metadata": {"simulated": True, "firmware": d.firmware, "format": d.format}},
                     Placed(d.latitude, d.longitude, loc.neighbourhood, loc.csa)))
    return register_many(dsn, rows)


