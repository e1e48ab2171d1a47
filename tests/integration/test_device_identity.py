"""Only a device may speak for itself: device credentials issued by the API and enforced by the real broker
(Mosquitto's dynamic security plugin), TLS verified, and the ingestor's session out of anyone else's reach."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from services.broker.connect import BrokerUnverified, Endpoint, client, connect
from services.launcher.stack import free_port
from tests.conftest import local_ca, make_broker
from tests.helpers import Service, count, metric_value, service_env, unique, wait_until

BALTIMORE = {"latitude": 39.2904, "longitude": -76.6122}


class Watched:
    """A connected MQTT 5 client that records what the broker answers."""

    def __init__(self, endpoint: Endpoint, client_id: str, username: str | None, password: str | None):
        self.connack = None
        self.disconnects: list = []
        self.pubacks: dict[int, mqtt.ReasonCode] = {}
        self.subacks: list = []
        self.connected = threading.Event()
        self.c = client(endpoint, client_id, username, password)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnects.append(rc)
        self.c.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.extend(rcs)
        self.c.reconnect_delay_set(60, 60)  # no reconnect during a test: a refusal stays visible
        connect(self.c, endpoint)
        self.c.loop_start()
        wait_until(lambda: self.connack is not None, 10, what="CONNACK")

    def _on_connect(self, c, userdata, flags, rc, props):
        self.connack = rc
        if not rc.is_failure:
            self.connected.set()

    def publish(self, topic: str, payload: bytes) -> mqtt.ReasonCode:
        info = self.c.publish(topic, payload, qos=1)
        return wait_until(lambda: self.pubacks.get(info.mid), 10, what="PUBACK")

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def register(http, admin, device_id=None, kind="air_quality") -> dict:
    device_id = device_id or unique("id")
    r = http.post("/v1/devices", headers=admin, json={"device_id": device_id, "kind": kind, **BALTIMORE})
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    return r.json()


def stored(dsn, device_id) -> int:
    return count(dsn, "SELECT count(*) FROM readings r JOIN devices d USING (device_key) WHERE d.device_id = %s",
                 (device_id,))


def test_anonymous_clients_are_refused(broker):
    for endpoint in (broker.endpoint(tls=False), broker.endpoint(tls=True)):
        w = Watched(endpoint, unique("anon"), None, None)
        assert w.connack.is_failure and w.connack.value in (0x86, 0x87), w.connack
        w.close()
    wrong = Watched(broker.endpoint(), unique("x"), "nobody", "guess")
    assert wrong.connack.is_failure
    wrong.close()


def test_a_device_publishes_only_as_itself(http, admin, dsn, broker, ingestor, api):
    a, b = register(http, admin), register(http, admin)
    creds = a["mqtt"]
    assert creds["username"] == creds["client_id"] == a["device_id"] and len(creds["password"]) >= 24
    assert creds["topics"]["readings"] == f"city/v1/devices/{a['device_id']}/readings"
    # nothing can show the password again
    assert "password" not in http.get(f"/v1/devices/{a['device_id']}").text
    dev = Watched(broker.endpoint(tls=True), a["device_id"], creds["username"], creds["password"])
    assert not dev.connack.is_failure
    t = time.time() - 60
    assert not dev.publish(creds["topics"]["readings"], b'{"time": %f, "readings": {"pm25": 12}}' % t).is_failure
    wait_until(lambda: stored(dsn, a["device_id"]) == 1, what="A's reading")
    # A on B's topics: MQTT 5 says Not authorized (0x87), and nothing reaches the ingestor
    for topic in (f"city/v1/devices/{b['device_id']}/readings", f"city/v1/devices/{b['device_id']}/status",
                  "city/v1/devices/ghost/readings", "citysense/internal/x"):
        assert dev.publish(topic, b'{"readings": {"pm25": 999}}').value == 0x87, topic
    # nor may a device read anything
    info = dev.c.subscribe("#", qos=1)
    wait_until(lambda: dev.subacks, 10, what="SUBACK")
    assert dev.subacks[0].is_failure, info
    time.sleep(1)  # anything that had got through would be stored or rejected by now
    assert stored(dsn, b["device_id"]) == 0
    assert count(dsn, "SELECT count(*) FROM rejected_messages WHERE topic LIKE %s", (f"%{b['device_id']}%",)) == 0
    dev.close()
    # and the passwords are in no log
    assert creds["password"] not in api.log() and creds["password"] not in ingestor.log()


def test_a_device_account_is_bound_to_its_client_id(http, admin, broker):
    a = register(http, admin)
    other = Watched(broker.endpoint(), unique("other"), a["device_id"], a["mqtt"]["password"])
    assert other.connack.is_failure
    other.close()


def test_rotated_credentials_replace_the_old_ones_at_once(http, admin, broker, dsn, ingestor):
    a = register(http, admin)
    old = a["mqtt"]["password"]
    dev = Watched(broker.endpoint(), a["device_id"], a["device_id"], old)
    assert dev.connected.is_set()
    r = http.post(f"/v1/devices/{a['device_id']}/credentials", headers=admin)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    new = r.json()["mqtt"]["password"]
    assert new != old
    wait_until(lambda: dev.disconnects, 10, what="the old connection closed")
    dev.close()
    refused = Watched(broker.endpoint(), a["device_id"], a["device_id"], old)
    assert refused.connack.is_failure
    refused.close()
    fresh = Watched(broker.endpoint(), a["device_id"], a["device_id"], new)
    assert not fresh.publish(f"city/v1/devices/{a['device_id']}/readings", b'{"readings": {"pm25": 3}}').is_failure
    wait_until(lambda: stored(dsn, a["device_id"]) == 1)
    fresh.close()
    assert http.post("/v1/devices/no-such-device/credentials", headers=admin).status_code == 404
    assert http.post(f"/v1/devices/{a['device_id']}/credentials").status_code == 401


@pytest.mark.parametrize("purge", [False, True])
def test_retiring_or_deleting_revokes_and_disconnects(http, admin, broker, purge):
    a = register(http, admin)
    dev = Watched(broker.endpoint(), a["device_id"], a["device_id"], a["mqtt"]["password"])
    assert http.delete(f"/v1/devices/{a['device_id']}", headers=admin, params={"purge": purge}).status_code == 200
    wait_until(lambda: dev.disconnects, 10, what="the device's connection closed")
    dev.close()
    again = Watched(broker.endpoint(), a["device_id"], a["device_id"], a["mqtt"]["password"])
    assert again.connack.is_failure
    again.close()
    if purge:  # a purged id may be registered again, with new credentials
        b = register(http, admin, a["device_id"])
        assert b["mqtt"]["password"] != a["mqtt"]["password"]


def test_ids_of_citysense_accounts_cannot_be_registered(http, admin):
    r = http.post("/v1/devices", headers=admin, json={"device_id": "citysense-ingest-x-1", "kind": "noise", **BALTIMORE})
    assert r.status_code == 422 and "citysense" in r.json()["detail"]


def test_the_ingestors_session_cannot_be_taken(http, admin, broker, ingestor):
    """Not by a device account, not by the ingestor's own password under another client id, and the
    ingestor keeps its session (it is not disconnected)."""
    ingest_id = ingestor.env["CITYSENSE_INGEST_CLIENT_ID"]
    a = register(http, admin)
    thief = Watched(broker.endpoint(), ingest_id, a["device_id"], a["mqtt"]["password"])
    assert thief.connack.is_failure
    thief.close()
    thief = Watched(broker.endpoint(), unique("ingest"), ingest_id, ingestor.env["CITYSENSE_MQTT_PASSWORD"])
    assert thief.connack.is_failure
    thief.close()
    # the recipe that once ended the ingestor's session and its queue (`mosquitto_sub -i <its id> -E`)
    thief = Watched(broker.endpoint(), ingest_id, None, None)
    assert thief.connack.is_failure
    thief.close()
    time.sleep(0.5)
    assert metric_value(ingestor.metrics_port, "citysense_ingest_broker_connected") == 1
    assert metric_value(ingestor.metrics_port, "citysense_ingest_session_takeovers_total") == 0


def test_tls_is_verified(workdir, tmp_path, broker):
    ca = local_ca(workdir)
    # a plain MQTT client on the TLS port gets nowhere
    plain = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=unique("p"), protocol=mqtt.MQTTv5)
    got = []
    plain.on_connect = lambda *a: got.append(a[3])
    try:
        plain.connect("127.0.0.1", broker.tls_port)
        plain.loop(timeout=2)
        plain.loop(timeout=2)
    except OSError:
        pass
    assert not got or got[0].is_failure
    # a client that does not trust the broker's CA refuses it, with a message that says what to set
    other = tmp_path / "other-ca"
    from services.broker.tls import LocalCA
    stranger = LocalCA(other).ensure()
    for endpoint in (Endpoint("127.0.0.1", broker.tls_port, True, stranger.ca_file),
                     Endpoint("127.0.0.1", broker.tls_port, True, None)):
        with pytest.raises(BrokerUnverified, match="CITYSENSE_MQTT_CA_FILE"):
            connect(client(endpoint, unique("v"), "x", "y"), endpoint)
    # TLS to a plain port fails (Mosquitto resets the connection)
    endpoint = Endpoint("127.0.0.1", broker.port, True, ca.ca_file)
    with pytest.raises((BrokerUnverified, OSError)):
        connect(client(endpoint, unique("v"), "x", "y"), endpoint)


def test_an_ingestor_that_cannot_verify_the_broker_stops_with_a_clear_error(workdir, tmp_path, dsn, broker):
    from services.broker.tls import LocalCA

    stranger = LocalCA(tmp_path / "ca").ensure()
    env = service_env(dsn, broker, CITYSENSE_MQTT_URL=f"mqtts://127.0.0.1:{broker.tls_port}",
                      CITYSENSE_MQTT_CA_FILE=str(stranger.ca_file))
    svc = Service("ingest", env, tmp_path / "ingest.log").start()
    assert svc.proc.wait(30) == 2
    assert "cannot be verified" in svc.log() and "CITYSENSE_MQTT_CA_FILE" in svc.log()
    assert "Traceback" not in svc.log()


def test_ingest_over_tls_with_a_client_certificate(workdir, tmp_path, dsn, http, admin):
    """A broker that requires client certificates: without one the handshake fails; the ingestor with its
    certificate (and its account) stores what a device sends over TLS."""
    ca = local_ca(workdir)
    own = make_broker(workdir, unique("mq-cert"), require_certificate=True)
    try:
        endpoint = own.endpoint(tls=True)
        with pytest.raises((BrokerUnverified, OSError)):
            c = client(endpoint, unique("n"), "x", "y")
            connect(c, endpoint)
            c.loop(timeout=2)
            raise OSError("the broker answered")  # pragma: no cover (the assertion below names it)
        cert, key = ca.client_cert(unique("ingest-cert"))
        env = service_env(dsn, own, CITYSENSE_MQTT_URL=f"mqtts://127.0.0.1:{own.tls_port}",
                          CITYSENSE_MQTT_CA_FILE=str(ca.ca_file), CITYSENSE_MQTT_CERT_FILE=str(cert),
                          CITYSENSE_MQTT_KEY_FILE=str(key))
        ing = Service("ingest", env, tmp_path / "ingest.log").start()
        try:
            wait_until(lambda: "connected to the broker" in ing.log(), 20, what="the ingestor connected over TLS")
            device_id = unique("tls")
            r = http.post("/v1/devices", headers=admin, json={"device_id": device_id, "kind": "noise", **BALTIMORE})
            assert r.status_code == 201  # the session broker's account: make one on this broker too
            password = own.control().add_device(device_id)
            dcert, dkey = ca.client_cert(device_id)
            dev_ep = Endpoint("127.0.0.1", own.tls_port, True, ca.ca_file, dcert, dkey)
            dev = Watched(dev_ep, device_id, device_id, password)
            assert not dev.publish(f"city/v1/devices/{device_id}/readings", b'{"readings": {"noise_laeq": 55}}').is_failure
            wait_until(lambda: stored(dsn, device_id) == 1, what="the reading sent over TLS")
            dev.close()
        finally:
            ing.stop()
    finally:
        own.stop()


def test_plain_port_can_be_turned_off(workdir):
    """`citysense up` with CITYSENSE_MQTT_PORT=0 (and every deployment file) serves TLS only."""
    from services.launcher.stack import MosquittoBroker, owned_dir

    b = MosquittoBroker(owned_dir(workdir, unique("mq-tls"), "mosquitto"), None, tls_port=free_port(), ca=local_ca(workdir))
    b.start()
    try:
        assert "listener" in b.config_file.read_text()
        assert b.config_file.read_text().count("\nlistener ") == 1
        w = Watched(b.endpoint(), unique("anon"), None, None)  # TLS (the only listener), anonymous: refused
        assert w.connack.is_failure
        w.close()
    finally:
        b.stop()



def test_a_new_broker_is_set_up_with_the_cli(workdir, tmp_path):
    """What deploy/mosquitto/README.md tells a city to do, with the real tools: `citysense broker
    init-config` writes the plugin's file, a real Mosquitto takes it, `add-ingestor` makes an account the
    ingestor can use, `retire-ingestor` deletes it again."""
    import os
    import subprocess
    import sys

    from services.launcher.stack import dynsec_plugin, owned_dir, wait_for_port

    d = owned_dir(workdir, unique("mq-cli"), "mosquitto")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CITYSENSE_")},
           "CITYSENSE_MQTT_ADMIN_PASSWORD": "admin-password-0123456789"}

    def cli(*args, **extra):
        return subprocess.run([sys.executable, "-m", "services.launcher.cli", "broker", *args], env={**env, **extra},
                              capture_output=True, text=True, timeout=60)

    r = cli("init-config", str(d / "dynsec.json"))
    assert r.returncode == 0, r.stderr
    port = free_port()
    (d / "m.conf").write_text(f"allow_anonymous false\nplugin {dynsec_plugin()}\nplugin_opt_config_file {d}/dynsec.json\n"
                              f"persistence false\nlistener {port} 127.0.0.1\n")
    import pwd
    m = pwd.getpwnam("mosquitto")
    for p in (d / "dynsec.json", d / "m.conf"):
        os.chown(p, m.pw_uid, m.pw_gid)
    proc = subprocess.Popen(["mosquitto", "-c", str(d / "m.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, 10)
        url = {"CITYSENSE_MQTT_URL": f"mqtt://127.0.0.1:{port}"}
        r = cli("add-ingestor", "citysense-ingest-test-1", **url)
        assert r.returncode == 0, r.stderr
        password = dict(line.split("=", 1) for line in r.stdout.split())["CITYSENSE_MQTT_PASSWORD"]
        assert password not in r.stderr  # shown once, on standard output, never in the log
        ep = Endpoint("127.0.0.1", port)
        w = Watched(ep, "citysense-ingest-test-1", "citysense-ingest-test-1", password)
        assert not w.connack.is_failure
        w.c.subscribe("$share/g/city/v1/devices/+/readings", qos=1)
        wait_until(lambda: w.subacks, 10)
        assert not w.subacks[0].is_failure
        w.close()
        r = cli("retire-ingestor", "citysense-ingest-test-1", CITYSENSE_MQTT_PASSWORD=password, **url)
        assert r.returncode == 0, r.stderr
        w = Watched(ep, "citysense-ingest-test-1", "citysense-ingest-test-1", password)
        assert w.connack.is_failure
        w.close()
        assert cli("add-ingestor", "x", CITYSENSE_MQTT_ADMIN_PASSWORD="wrong-password-000", **url).returncode == 2
    finally:
        proc.terminate()
        proc.wait(10)
