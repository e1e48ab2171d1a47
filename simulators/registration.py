"""Registering the simulated fleet the way a city provisions a device: ``POST /v1/devices`` with the admin
token, which answers the device's MQTT credentials once. The simulator keeps them in its credentials
file (mode 0600) and each device connects with its own. A device already registered whose password the
file does not hold gets new credentials (``POST /v1/devices/{id}/credentials``).

``register_in_store`` registers straight in the database, without broker accounts: for benchmarks that
publish for many devices through one bridge account."""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from services.core.areas import OutsideCity, baltimore
from services.core.settings import Settings
from services.store.devices import Placed, register_many
from simulators.fleet import SimDevice

log = logging.getLogger("citysense.simulate")


class RegistrationError(RuntimeError):
    pass


def credentials_path(settings: Settings) -> Path:
    return settings.sim_credentials_file or settings.home / "sim-credentials.json"


def load_credentials(path: Path) -> dict[str, str]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        log.warning("%s is not readable JSON; the devices get new credentials", path)
        return {}


def save_credentials(path: Path, creds: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f)
    os.replace(tmp, path)


def _post(settings: Settings, path: str, body: dict | None, wait_s: float = 60) -> tuple[int, dict]:
    """POST to the API; an API not answering yet (``citysense up`` starts it beside the simulator) or
    answering 503 is retried for ``wait_s`` seconds."""
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(settings.sim_api_url.rstrip("/") + path, data=data, method="POST", headers={
        "Authorization": f"Bearer {settings.admin_token.get_secret_value()}", "Content-Type": "application/json"})
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("detail", "")
            except ValueError:
                detail = ""
            if exc.code != 503 or time.monotonic() > deadline:
                return exc.code, {"detail": detail}
        except urllib.error.URLError as exc:
            if time.monotonic() > deadline:
                raise RegistrationError(f"the API at {settings.sim_api_url} does not answer: {exc.reason}") from None
        time.sleep(1)


def register_fleet(settings: Settings, fleet: list[SimDevice], min_interval_s: float = 0) -> tuple[int, dict[str, str]]:
    """Register the fleet's devices through the API (those it does not hold credentials for); returns
    how many were new and every device's password."""
    path = credentials_path(settings)
    creds = load_credentials(path)
    city = baltimore()
    new = 0
    try:
        for d in fleet:
            if d.device_id in creds:
                continue
            try:
                city.locate(d.latitude, d.longitude)
            except OutsideCity:
                continue
            status, answer = _post(settings, "/v1/devices", {
                "device_id": d.device_id, "kind": d.kind, "latitude": d.latitude, "longitude": d.longitude,
                "interval_s": int(max(d.interval_s, min_interval_s)),
                "metadata": {"simulated": True, "firmware": d.firmware, "format": d.format}})
            if status == 409:  # registered by an earlier run whose credentials are lost: new ones
                status, answer = _post(settings, f"/v1/devices/{d.device_id}/credentials", None)
            else:
                new += status == 201
            if status not in (200, 201):
                raise RegistrationError(f"registering {d.device_id} at {settings.sim_api_url}: {status} {answer.get('detail', '')}")
            creds[d.device_id] = answer["mqtt"]["password"]
    finally:
        save_credentials(path, creds)
    return new, creds


def register_in_store(dsn: str, fleet: list[SimDevice], min_interval_s: float = 0) -> int:
    """Register the fleet's devices (those not yet registered) in the database only; returns how many were new."""
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
