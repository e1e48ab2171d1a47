"""Registering a device: shared by the API's admin route and the simulator, so both place a device in
its neighbourhood and CSA the same way."""

from __future__ import annotations

from services.core.areas import baltimore

#: Upsert-free on purpose: registering an id twice is a conflict the caller reports, not an overwrite.
INSERT_DEVICE = """
INSERT INTO devices (device_id, kind, latitude, longitude, neighbourhood, csa, interval_s, metadata)
VALUES (%(device_id)s, %(kind)s, %(latitude)s, %(longitude)s, %(neighbourhood)s, %(csa)s, %(interval_s)s, %(metadata)s)
ON CONFLICT (device_id) DO NOTHING
RETURNING device_id
"""


def placed(device: dict) -> dict:
    """The device's row values with its neighbourhood and CSA found from its position.
    Raises services.core.areas.OutsideCity for a position outside the city."""
    loc = baltimore().locate(device["latitude"], device["longitude"])
    return {**device, "neighbourhood": loc.neighbourhood, "csa": loc.csa}
