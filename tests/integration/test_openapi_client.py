"""App developers generate clients from the OpenAPI document: a real generator (openapi-python-client)
makes one from the running API without a warning, and the generated client reads both answers and
problems (one named Problem component) from the real API."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import unique


def test_a_generated_client_talks_to_the_api(api, http, admin, tmp_path, monkeypatch):
    doc = http.get("/openapi.json")
    assert doc.status_code == 200
    spec = doc.json()
    assert "Problem" in spec["components"]["schemas"]
    (tmp_path / "openapi.json").write_text(doc.text)
    bin_dir = Path(sys.executable).parent
    r = subprocess.run([str(bin_dir / "openapi-python-client"), "generate", "--path", "openapi.json", "--meta", "none",
                        "--output-path", "citysense_client", "--fail-on-warning"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=180, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stdout + r.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    pkg = importlib.import_module("citysense_client")
    models = importlib.import_module("citysense_client.models")
    get_device = importlib.import_module("citysense_client.api.devices.get_device_v1_devices_device_id_get")
    create = importlib.import_module("citysense_client.api.devices.create_device_v1_devices_post")
    client = pkg.Client(base_url=api.base_url)
    # a problem comes back as the Problem model, on every operation that documents one
    missing = get_device.sync_detailed(client=client, device_id="no-such-device")
    assert missing.status_code == 404 and isinstance(missing.parsed, models.Problem)
    assert missing.parsed.status == 404 and "no-such-device" in missing.parsed.detail
    authed = pkg.AuthenticatedClient(base_url=api.base_url, token=api.token)
    device_id = unique("gen")
    body = models.DeviceCreate(device_id=device_id, kind=models.DeviceCreateKind("noise"), latitude=39.2904, longitude=-76.6122)
    made = create.sync_detailed(client=authed, body=body)
    assert made.status_code == 201 and made.parsed.mqtt.username == device_id
    refused = create.sync_detailed(client=client, body=body)
    assert refused.status_code == 401 and isinstance(refused.parsed, models.Problem)
    found = get_device.sync(client=client, device_id=device_id)
    assert found.device_id == device_id and found.kind.value == "noise"
