"""Accounts in Mosquitto's dynamic security plugin (shipped with Debian's ``mosquitto``).

The plugin keeps its accounts in a JSON file and takes changes at run time as commands published to
``$CONTROL/dynamic-security/v1`` by an account allowed to (the *admin* account, which only the API
holds). citysense keeps these accounts:

- one per device: user name = client id = the device id, allowed to publish only to
  ``city/v1/devices/<id>/readings`` and ``…/status``, and to subscribe to nothing. In Mosquitto 2.0 a
  role's ACL topics are literal (no ``%u``), hence one role per device (``citysense-device-<id>``);
- one per ingestor: user name = client id (``citysense-ingest-…``), allowed to subscribe to every
  device's readings and status (directly or through a ``$share`` group) and to the broker's ``$SYS``
  counters, and to publish nothing;
- optionally bridges (``citysense-bridge`` role): a network server or gateway that publishes for many
  devices (any device's two topics). The ingestor still checks each message's device against its topic.

Every account is bound to its client id, so no account can take another's session (the ingestor's
persistent session and queue included), and anonymous clients are refused by the broker's
configuration. The plugin stores only a salted PBKDF2-SHA512 hash of each password; citysense keeps
none: a device's password is shown once, when it is issued.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import threading
import time
import uuid
from pathlib import Path

from services.broker.connect import Endpoint, client, connect
from services.core.catalogue import device_topic

log = logging.getLogger("citysense.broker")

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
ADMIN_ROLE = "citysense-admin"
INGEST_ROLE = "citysense-ingest"
BRIDGE_ROLE = "citysense-bridge"
DEVICE_ROLE_PREFIX = "citysense-device-"
#: Ids citysense's own accounts use; device ids may not start with it.
RESERVED_PREFIX = "citysense-"
#: Mosquitto's own iteration count for PBKDF2-SHA512 (plugins/dynamic-security).
ITERATIONS = 101


class BrokerUnavailable(RuntimeError):
    """The broker did not answer an account command in time."""


class CommandFailed(RuntimeError):
    """The plugin refused a command (its error text says why)."""


def new_password() -> str:
    return secrets.token_urlsafe(24)


def hash_password(password: str) -> dict:
    """The plugin's stored form of a password (salted PBKDF2-SHA512, as ``mosquitto_ctrl`` makes it)."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(), "iterations": ITERATIONS}


def _acl(kind: str, topic: str) -> dict:
    return {"acltype": kind, "topic": topic, "allow": True}


def device_role(device_id: str) -> dict:
    return {"rolename": DEVICE_ROLE_PREFIX + device_id,
            "acls": [_acl("publishClientSend", device_topic(device_id, "readings")),
                     _acl("publishClientSend", device_topic(device_id, "status"))]}


def fixed_roles() -> list[dict]:
    """The admin, ingestor and bridge roles (the same in a new file and after every start)."""
    readings, status = device_topic("+", "readings"), device_topic("+", "status")
    return [
        {"rolename": ADMIN_ROLE, "textdescription": "manages accounts over $CONTROL (the citysense API)",
         "acls": [_acl("publishClientSend", CONTROL_TOPIC + "/#"), _acl("publishClientReceive", CONTROL_TOPIC + "/#"),
                  _acl("subscribePattern", CONTROL_TOPIC + "/#")]},
        {"rolename": INGEST_ROLE, "textdescription": "subscribes to every device's readings and status",
         "acls": [*(_acl("subscribePattern", t) for t in (readings, status, f"$share/+/{readings}", f"$share/+/{status}")),
                  # the broker's counters the ingestor exports (services/ingest/mqtt.py SYS_TOPICS)
                  _acl("subscribePattern", "$SYS/broker/#"),
                  # the ingestor's acknowledgement barrier (a subscription nobody publishes to)
                  _acl("subscribePattern", "citysense/internal/#")]},
        {"rolename": BRIDGE_ROLE, "textdescription": "publishes for many devices (a gateway or network server)",
         "acls": [_acl("publishClientSend", readings), _acl("publishClientSend", status)]},
    ]


def account(username: str, password: str, role: str, clientid: str | None = None) -> dict:
    return {"username": username, "clientid": clientid or username, "roles": [{"rolename": role}], **hash_password(password)}


def write_config(path: Path, admin_username: str, admin_password: str, ingestors: dict[str, str] | None = None,
                 bridges: dict[str, str] | None = None) -> None:
    """Create or bring up to date the plugin's file before the broker starts: citysense's roles, the
    admin account and the given ingestor and bridge accounts (their passwords set to these). Device
    accounts already in the file are kept."""
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc["defaultACLAccess"] = {"publishClientSend": False, "publishClientReceive": True, "subscribe": False,
                               "unsubscribe": True}
    ours = {r["rolename"]: r for r in fixed_roles()}
    doc["roles"] = [r for r in doc.get("roles", []) if r["rolename"] not in ours] + list(ours.values())
    wanted = {admin_username: account(admin_username, admin_password, ADMIN_ROLE)}
    # The admin account is not bound to a client id: each API worker connects with its own.
    del wanted[admin_username]["clientid"]
    wanted.update({cid: account(cid, pw, INGEST_ROLE) for cid, pw in (ingestors or {}).items()})
    wanted.update({name: account(name, pw, BRIDGE_ROLE) for name, pw in (bridges or {}).items()})
    doc["clients"] = [c for c in doc.get("clients", []) if c["username"] not in wanted] + list(wanted.values())
    doc.setdefault("groups", [])
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


class Control:
    """The admin account's connection: account commands, answered in order. Thread-safe (one command
    batch at a time); reconnects by itself, and a command while the broker is away raises
    BrokerUnavailable after ``timeout`` seconds."""

    def __init__(self, endpoint: Endpoint, username: str, password: str, timeout: float = 10.0):
        self._endpoint, self._timeout = endpoint, timeout
        self._client = client(endpoint, f"citysense-control-{uuid.uuid4().hex[:12]}", username, password)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._answers: dict[str, dict] = {}
        self._answered = threading.Condition()
        self._started = False

    def _start(self) -> None:
        if self._started:
            return
        try:
            connect(self._client, self._endpoint)
        except OSError:  # down for now: the loop keeps trying
            self._client.connect_async(self._endpoint.host, self._endpoint.port)
        self._client.loop_start()
        self._started = True

    def _on_connect(self, c, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("the broker refused the admin account (%s): check CITYSENSE_MQTT_ADMIN_USERNAME/PASSWORD", reason_code)
            return
        c.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_subscribe(self, c, userdata, mid, reason_codes, properties):
        if all(not rc.is_failure for rc in reason_codes):
            self._ready.set()
        else:
            log.error("the broker refused the admin account its control topic: is its role %s?", ADMIN_ROLE)

    def _on_message(self, c, userdata, msg):
        try:
            for r in json.loads(msg.payload).get("responses", []):
                with self._answered:
                    self._answers[r.get("correlationData", "")] = r
                    self._answered.notify_all()
        except (ValueError, AttributeError):
            log.warning("unreadable answer on %s", RESPONSE_TOPIC)

    def run(self, commands: list[dict], allow: tuple[str, ...] = ()) -> list[dict]:
        """Send ``commands`` in one message; their answers, in order. A command the plugin refuses raises
        CommandFailed, unless its error contains one of ``allow`` (e.g. "not found" on a delete)."""
        with self._lock:
            self._start()
            if not self._ready.wait(self._timeout):
                raise BrokerUnavailable(f"the broker at {self._endpoint.url} does not answer account commands")
            ids = [uuid.uuid4().hex for _ in commands]
            payload = {"commands": [{**cmd, "correlationData": i} for cmd, i in zip(commands, ids)]}
            self._client.publish(CONTROL_TOPIC, json.dumps(payload), qos=1)
            deadline = time.monotonic() + self._timeout
            with self._answered:
                if not self._answered.wait_for(lambda: all(i in self._answers for i in ids), deadline - time.monotonic()):
                    raise BrokerUnavailable(f"the broker at {self._endpoint.url} did not answer account commands in time")
                answers = [self._answers.pop(i) for i in ids]
        for cmd, answer in zip(commands, answers):
            error = answer.get("error")
            if error and not any(a in error for a in allow):
                raise CommandFailed(f"{cmd['command']}: {error}")
        return answers

    # -- citysense's accounts -----------------------------------------------------------------------------
    def add_device(self, device_id: str) -> str:
        """A new account for a device; its password (the only time anyone sees it). An account left
        from an earlier device with this id (purged) is replaced."""
        password = new_password()
        role = device_role(device_id)
        # One message, one round trip: the plugin runs its commands in order
        answers = self.run([{"command": "deleteClient", "username": device_id},
                            {"command": "deleteRole", "rolename": role["rolename"]},
                            {"command": "createRole", **role},
                            {"command": "createClient", "username": device_id, "clientid": device_id, "password": password,
                             "roles": [{"rolename": role["rolename"]}]}], allow=("not found",))
        for answer in answers[2:]:
            if answer.get("error"):
                raise CommandFailed(f"{answer.get('command')}: {answer['error']}")
        return password

    def rotate_device(self, device_id: str) -> str:
        """New credentials for a device: the old password stops working and a connection made with it
        is closed. A device with no account yet (registered before accounts existed) gets one."""
        password = new_password()
        answer = self.run([{"command": "setClientPassword", "username": device_id, "password": password}],
                          allow=("not found",))[0]
        if answer.get("error"):
            return self.add_device(device_id)
        return password  # the plugin closes the account's connections itself ("administrative action")

    def revoke_device(self, device_id: str) -> None:
        """Delete the device's account (the broker closes its connection) and its role."""
        self.run([{"command": "deleteClient", "username": device_id},
                  {"command": "deleteRole", "rolename": DEVICE_ROLE_PREFIX + device_id}], allow=("not found",))

    def add_ingestor(self, client_id: str, password: str) -> None:
        self._replace(client_id, password, INGEST_ROLE)

    def retire_ingestor(self, client_id: str, password: str | None) -> None:
        """End an ingestor's persistent session and queue (a clean start as that account, with the
        ingestors' ``password``), then delete its account so nobody can reconnect with it."""
        if password:
            c = client(self._endpoint, client_id, client_id, password)
            connect(c, self._endpoint, clean_start=True)  # MQTT 5 clean start, session expiry 0: discarded
            c.loop_start()
            deadline = time.monotonic() + self._timeout
            while not c.is_connected() and time.monotonic() < deadline:
                time.sleep(0.05)
            c.disconnect()
            c.loop_stop()
        self.run([{"command": "deleteClient", "username": client_id}], allow=("not found",))

    def add_bridge(self, username: str, password: str) -> None:
        self._replace(username, password, BRIDGE_ROLE)

    def _replace(self, username: str, password: str, role: str) -> None:
        self.run([{"command": "deleteClient", "username": username}], allow=("not found",))
        self.run([{"command": "createClient", "username": username, "clientid": username, "password": password,
                   "roles": [{"rolename": role}]}])

    def close(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False
