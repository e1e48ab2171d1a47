"""``citysense up``: the whole system on this machine, in the foreground.

Starts, in order: the PostgreSQL/TimescaleDB cluster (``.citysense/pg``, port 5433), the Mosquitto
broker (127.0.0.1:1883), the migrations, then the ingestor, the API and the simulated fleet as child
processes. Ctrl-C or SIGTERM stops them in reverse order. Data stays in ``.citysense/`` between runs.
A child that dies is restarted after a pause, so a crash shows in the log instead of ending the demo.
"""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from services.store.migrate import migrate
from services.store.readings import any_stored
from services.core.settings import Settings, redact_url
from services.broker.tls import LocalCA, TlsError
from services.launcher.stack import MosquittoBroker, PostgresCluster, StackError, require_free_port, service_dir


#: Settings that carry secrets: a child gets only those it needs, never the caller's copies.
SECRET_VARIABLES = {"CITYSENSE_DATABASE_URL", "CITYSENSE_ADMIN_TOKEN", "CITYSENSE_MQTT_PASSWORD",
                    "CITYSENSE_MQTT_ADMIN_PASSWORD"}


def _say(msg: str) -> None:
    print(f"[citysense] {msg}", flush=True)


def _secret(secrets_file: Path, key: str) -> str:
    """A secret kept in the local secrets file (made on first use), so every run uses the same one."""
    if secrets_file.exists():
        for line in secrets_file.read_text().splitlines():
            if line.startswith(f"{key}="):
                return line.split("=", 1)[1].strip()
    value = secrets.token_urlsafe(24)
    with secrets_file.open("a") as f:
        f.write(f"{key}={value}\n")
    os.chmod(secrets_file, 0o600)
    return value


def _admin_token(settings: Settings, secrets_file: Path) -> str:
    return settings.admin_token.get_secret_value() or _secret(secrets_file, "ADMIN_TOKEN")


#: The unprivileged user the services run as when `up` runs as root (deploy/local/install.sh creates it).
SERVICE_USER = "citysense"


def service_user(python: str, readable: list[Path]) -> tuple[pwd.struct_passwd | None, str]:
    """The user to run the services as, or None (with why) when they must stay with the caller: not
    root, no such user, or the interpreter, the code or a file they read is out of that user's reach
    (a checkout under /root, say)."""
    if os.geteuid() != 0:
        return None, ""
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None, f"there is no user {SERVICE_USER!r} (deploy/local/install.sh creates it)"
    probe = "import services.launcher.cli, sys\nfor p in sys.argv[1:]: open(p, 'rb').close()"
    try:
        r = subprocess.run([python, "-c", probe, *map(str, readable)], cwd="/", user=user.pw_uid, group=user.pw_gid,
                           extra_groups=[], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"},
                           capture_output=True, text=True, timeout=60)
        reachable = r.returncode == 0
    except OSError:  # the interpreter itself is out of reach
        reachable = False
    if not reachable:
        return None, (f"the user {SERVICE_USER!r} cannot reach this installation ({python} and its code): install "
                      "it where other users may read it (e.g. /srv/citysense, or a wheel in /opt)")
    return user, ""


class Child:
    def __init__(self, name: str, args: list[str], env: dict[str, str], user: pwd.struct_passwd | None = None):
        self.name, self.args, self.env, self.user = name, args, env, user
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def start(self) -> None:
        # A session of its own: Ctrl-C reaches only the supervisor, which then stops the children in
        # order (simulator, API, ingestor, broker, database) instead of all at once.
        drop = {} if self.user is None else {
            "user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": [], "cwd": "/",
            "env": {**self.env, "HOME": "/nonexistent", "USER": self.user.pw_name, "LOGNAME": self.user.pw_name}}
        self.proc = subprocess.Popen(self.args, **{"env": self.env, **drop}, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    def stop(self, timeout: float = 20) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _say(f"{self.name} did not stop within {timeout:.0f} s; killing it")
                self.proc.kill()
                self.proc.wait()


def up(settings: Settings, simulator: bool = True) -> int:
    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    secrets_file = home / "secrets.env"
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    cluster = broker = None
    children: list[Child] = []
    owner = False  # True once this run owns .citysense/ (no other `up` is running there)
    try:
        _kill_leftovers(home / "run.pids")
        _record_pids(home / "run.pids", [])
        owner = True
        cluster = PostgresCluster(service_dir(home, "pg", "postgres"), settings.pg_port, secrets_file, settings.pg_bin)
        if cluster.running():
            _say("stopping a PostgreSQL left running by an earlier run")
            cluster.stop()
        require_free_port("127.0.0.1", settings.pg_port, "PostgreSQL", "CITYSENSE_PG_PORT")
        if settings.mqtt_port:
            require_free_port("127.0.0.1", settings.mqtt_port, "the MQTT broker", "CITYSENSE_MQTT_PORT")
        require_free_port("127.0.0.1", settings.mqtt_tls_port, "the MQTT broker (TLS)", "CITYSENSE_MQTT_TLS_PORT")
        require_free_port(settings.api_host, settings.api_port, "the API", "CITYSENSE_API_PORT")
        if settings.ingest_metrics_port:
            require_free_port(settings.ingest_metrics_host, settings.ingest_metrics_port, "the ingestor's metrics",
                              "CITYSENSE_INGEST_METRICS_PORT")

        _say(f"starting PostgreSQL {cluster.pg_bin.parts[-2]} with TimescaleDB on 127.0.0.1:{settings.pg_port}")
        cluster.init()
        cluster.start()
        ca = LocalCA(home / "tls").ensure()
        ingest_id = settings.client_id
        broker = MosquittoBroker(service_dir(home, "mosquitto", "mosquitto"), settings.mqtt_port or None,
                                 tls_port=settings.mqtt_tls_port, ca=ca,
                                 admin_password=_secret(secrets_file, "MQTT_ADMIN_PASSWORD"),
                                 ingest_password=_secret(secrets_file, "MQTT_INGEST_PASSWORD"), ingestors=(ingest_id,))
        _say(f"starting Mosquitto on 127.0.0.1:{settings.mqtt_tls_port} (TLS)"
             + (f" and 127.0.0.1:{settings.mqtt_port}" if settings.mqtt_port else "") + ", accounts required")
        broker.start()
        applied = migrate(cluster.dsn)
        _say(f"migrations: {'applied ' + ', '.join(map(str, applied)) if applied else 'schema up to date'}")

        token = _admin_token(settings, secrets_file)
        api = f"http://{settings.api_host}:{settings.api_port}"
        # Every service speaks TLS to the broker, verified against the local CA, each with its own account;
        # and each gets only the secrets it needs (the simulator no database, the ingestor no admin token).
        base = {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES}
        base.update({"CITYSENSE_MQTT_URL": f"mqtts://127.0.0.1:{settings.mqtt_tls_port}",
                     "CITYSENSE_MQTT_CA_FILE": str(ca.ca_file), "CITYSENSE_ENVIRONMENT": "development",
                     "CITYSENSE_SIM_DEVICES": str(settings.sim_devices)})
        ingest_env = {**base, "CITYSENSE_DATABASE_URL": cluster.dsn, "CITYSENSE_INGEST_CLIENT_ID": ingest_id,
                      "CITYSENSE_MQTT_PASSWORD": broker.ingest_password}
        api_env = {**base, "CITYSENSE_DATABASE_URL": cluster.dsn, "CITYSENSE_ADMIN_TOKEN": token,
                   "CITYSENSE_MQTT_ADMIN_PASSWORD": broker.admin_password}
        # the simulator's devices' passwords, in a directory of the user the services run as
        sim_dir = service_dir(home, "simulator", SERVICE_USER if _user_exists(SERVICE_USER) else "root")
        sim_env = {**base, "CITYSENSE_ADMIN_TOKEN": token, "CITYSENSE_SIM_API_URL": api,
                   "CITYSENSE_SIM_CREDENTIALS_FILE": str(sim_dir / "credentials.json")}
        cli = [sys.executable, "-m", "services.launcher.cli"]
        # Services that parse what strangers send run unprivileged (as root only when they cannot).
        user, why_not = service_user(sys.executable, [ca.ca_file])
        if user is None and why_not:
            _say(f"running the services as root: {why_not}")
        children = [Child("ingestor", [*cli, "ingest"], ingest_env, user), Child("API", [*cli, "api"], api_env, user)]
        if simulator:
            # On a fresh database the fleet first backfills a day, so AQI (NowCast), noise (Lden) and
            # daily cycles have something to show from the first minute.
            empty = not any_stored(cluster.dsn)
            children.append(Child("simulator", [*cli, "simulate", *(["--backfill-hours", "24"] if empty else [])], sim_env,
                                  user))
        for child in children:
            child.start()
        if simulator:  # a restarted simulator carries on live; the history is already there
            children[-1].args = [*cli, "simulate"]
        _record_pids(home / "run.pids", [broker.process.pid, *(c.proc.pid for c in children)])

        _wait_for_api(api, stop)
        metrics_line = (f"http://{settings.ingest_metrics_host}:{settings.ingest_metrics_port}/metrics"
                        if settings.ingest_metrics_port else "off")
        print(
            "\n"
            "citysense is up\n"
            f"  dashboard      {api}/\n"
            f"  API            {api}\n"
            f"  API docs       {api}/docs\n"
            f"  API metrics    {api}/metrics\n"
            f"  ingest metrics {metrics_line}\n"
            f"  MQTT broker    mqtts://127.0.0.1:{settings.mqtt_tls_port} (CA {ca.ca_file})"
            + (f", mqtt://127.0.0.1:{settings.mqtt_port}" if settings.mqtt_port else "") + "\n"
            "                 (an account per device: POST /v1/devices answers its credentials)\n"
            f"  database       {redact_url(cluster.dsn)}\n"
            f"  admin token    ADMIN_TOKEN in {secrets_file} (with the other local secrets)\n"
            f"  fleet          {settings.sim_devices if simulator else 0} simulated devices\n"
            f"  data           {home}\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )

        while not stop.wait(1.0):
            for child in children:
                code = child.proc.poll()
                if code is not None:
                    child.restarts += 1
                    _say(f"{child.name} exited with status {code}; restarting it (restart {child.restarts})")
                    time.sleep(min(2 * child.restarts, 30))
                    child.start()
                    _record_pids(home / "run.pids", [broker.process.pid, *(c.proc.pid for c in children)])
        _say("stopping")
        return 0
    except (StackError, TlsError) as exc:
        _say(str(exc))
        return 2
    finally:
        if owner:
            _stop_all(children, broker, cluster, home)


def _stop_all(children: list[Child], broker, cluster, home: Path) -> None:
    """Stop in reverse order of start: what produces data first, the database last."""
    for child in reversed(children):
        child.stop()
    if broker:
        broker.stop()
    if cluster and cluster.running():
        cluster.stop()
    (home / "run.pids").unlink(missing_ok=True)
    if children:
        _say("stopped")


def _wait_for_api(api: str, stop: threading.Event, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        try:
            with urllib.request.urlopen(f"{api}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _record_pids(path: Path, pids: list[int]) -> None:
    """The supervisor's pid first, then its children's."""
    path.write_text("".join(f"{p}\n" for p in [os.getpid(), *pids]))


def _is_supervisor(pid: int) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"up" in args and any(a.endswith(b"citysense") or a == b"services.launcher.cli" for a in args)


def _alive(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _kill_leftovers(path: Path) -> None:
    """Stop what an earlier run left behind when it was killed without a chance to clean up
    (SIGKILL, a closed terminal): its broker and services would otherwise hold the ports."""
    if not path.exists():
        return
    pids = [int(p) for p in path.read_text().split()]
    if pids and pids[0] != os.getpid() and _is_supervisor(pids[0]):
        raise StackError(f"citysense up is already running here (process {pids[0]}); stop it first, or give this "
                         "run its own CITYSENSE_HOME and ports")
    for pid in pids[1:]:
        if _alive(pid, b"mosquitto") or _alive(pid, b"services.launcher.cli"):
            _say(f"stopping process {pid} left running by an earlier run")
            try:
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    path.unlink(missing_ok=True)
