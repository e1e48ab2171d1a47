"""Run citysense's own PostgreSQL (with TimescaleDB) cluster and Mosquitto broker on this machine.

Used by ``citysense up`` (data kept under ``.citysense/``) and by the test fixtures (throw-away
directories, free ports). PostgreSQL refuses to run as root, so its cluster runs as the ``postgres``
system user (created by Debian's package); the broker drops to the ``mosquitto`` user.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from services.broker import dynsec
from services.broker.connect import Endpoint
from services.broker.dynsec import Control, new_password
from services.broker.tls import LocalCA
from services.core.settings import ADMIN_USERNAME
from services.store.migrate import bootstrap

#: The repository's deploy/mosquitto/mosquitto.conf.template, installed in the package services.deploy.
MOSQUITTO_TEMPLATE = files("services.deploy") / "mosquitto" / "mosquitto.conf.template"


class StackError(RuntimeError):
    """Something the user must fix (a port in use, a missing package): the message says what."""


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def require_free_port(host: str, port: int, what: str, setting: str) -> None:
    if port_in_use(host, port):
        raise StackError(f"port {port} on {host} ({what}) is already in use: stop what uses it, or set {setting} to another port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise StackError(f"nothing answered on {host}:{port} within {timeout:.0f} s")


def _reachable_by_others(path: Path) -> bool:
    """True when a non-root system user can reach ``path`` (every ancestor is world-searchable)."""
    for p in [path, *path.parents]:
        if p.exists() and not (p.stat().st_mode & stat.S_IXOTH):
            return False
    return True


def service_dir(home: Path, name: str, owner: str) -> Path:
    """A directory for a service that runs as ``owner``. Under ``home`` when that user can reach it;
    otherwise (a checkout under /root, say) under /var/lib/citysense/, linked from ``home``."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    link = home / name
    if link.is_symlink():
        target = link.resolve()
    elif _reachable_by_others(home):
        target = link
    else:
        digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
        target = Path("/var/lib/citysense") / digest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(target.parent, 0o755)
        link.symlink_to(target)
    target.mkdir(parents=True, exist_ok=True)
    user = pwd.getpwnam(owner)
    os.chown(target, user.pw_uid, user.pw_gid)
    os.chmod(target, 0o700)
    return target


def owned_dir(root: Path, name: str, owner: str) -> Path:
    """A new private directory ``root/name`` owned by a service user (throw-away stacks: tests,
    benchmarks). ``root`` itself must be reachable by that user."""
    d = root / name
    d.mkdir()
    user = pwd.getpwnam(owner)
    os.chown(d, user.pw_uid, user.pw_gid)
    os.chmod(d, 0o700)
    return d


def find_pg_bin() -> Path:
    """The newest installed PostgreSQL server that has the TimescaleDB extension."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]), reverse=True)
    for postgres in candidates:
        version = postgres.parts[-3]
        if list(Path(f"/usr/lib/postgresql/{version}/lib").glob("timescaledb*.so")):
            return postgres.parent
    raise StackError("no PostgreSQL server with TimescaleDB is installed: run deploy/local/install.sh (or `make run`)")


def _as_postgres(args: list[str], **kw) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    # A session of its own, so a Ctrl-C meant for `citysense up` does not reach the server directly.
    return subprocess.run(args, check=True, capture_output=True, text=True, start_new_session=True, **kw)


@dataclass
class PostgresCluster:
    """A PostgreSQL cluster in ``data_dir`` on 127.0.0.1:``port``, with a superuser password kept in
    ``data_dir``'s sibling secrets file and a ``citysense`` role owning a ``citysense`` database."""

    data_dir: Path
    port: int
    secrets_file: Path
    pg_bin: Path | None = None
    log_file: Path | None = None

    def __post_init__(self):
        self.pg_bin = self.pg_bin or find_pg_bin()
        # Inside the data directory: the postgres user can always write there.
        self.log_file = self.log_file or self.data_dir / "citysense-server.log"

    # -- secrets ----------------------------------------------------------------------------
    def _secrets(self) -> dict[str, str]:
        values = {}
        if self.secrets_file.exists():
            for line in self.secrets_file.read_text().splitlines():
                if "=" in line and not line.startswith("#"):
                    k, v = line.split("=", 1)
                    values[k.strip()] = v.strip()
        changed = False
        for key in ("PG_SUPERUSER_PASSWORD", "PG_CITYSENSE_PASSWORD"):
            if key not in values:
                values[key] = secrets.token_urlsafe(18)
                changed = True
        if changed:
            self.secrets_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("# citysense local secrets: keep private\n")
                f.writelines(f"{k}={v}\n" for k, v in values.items())
        return values

    def secret(self, key: str) -> str:
        return self._secrets()[key]

    @property
    def superuser_dsn(self) -> str:
        return f"postgresql://postgres:{self.secret('PG_SUPERUSER_PASSWORD')}@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return f"postgresql://citysense:{self.secret('PG_CITYSENSE_PASSWORD')}@127.0.0.1:{self.port}/citysense"

    # -- lifecycle ------------------------------------------------------------------------------
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialised():
            return
        pw = self.secret("PG_SUPERUSER_PASSWORD")
        fd, name = tempfile.mkstemp(prefix="citysense-pw-")
        pwfile = Path(name)
        with os.fdopen(fd, "w") as f:
            f.write(pw + "\n")
        pg = pwd.getpwnam("postgres")
        os.chown(pwfile, pg.pw_uid, pg.pw_gid)
        try:
            _as_postgres([str(self.pg_bin / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                          "--pwfile", str(pwfile), "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8"])
        finally:
            pwfile.unlink(missing_ok=True)
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                "\n# citysense\n"
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "shared_preload_libraries = 'timescaledb'\n"
                "timescaledb.telemetry_level = off\n"
                "max_connections = 100\n"
                "shared_buffers = 256MB\n"
                "synchronous_commit = on\n"
                "max_wal_size = 2GB\n"
                "log_min_messages = warning\n"
            )

    def running(self) -> bool:
        if not self.initialised():
            return False
        r = subprocess.run(["runuser", "-u", "postgres", "--", str(self.pg_bin / "pg_ctl"), "status", "-D", str(self.data_dir)]
                           if os.geteuid() == 0 else [str(self.pg_bin / "pg_ctl"), "status", "-D", str(self.data_dir)],
                           capture_output=True)
        return r.returncode == 0

    def start(self, timeout: float = 60) -> None:
        self.log_file.touch()
        pg = pwd.getpwnam("postgres")
        os.chown(self.log_file, pg.pw_uid, pg.pw_gid)
        try:
            _as_postgres([str(self.pg_bin / "pg_ctl"), "start", "-w", "-t", str(int(timeout)), "-D", str(self.data_dir),
                          "-l", str(self.log_file), "-o", f"-p {self.port}"])
        except subprocess.CalledProcessError as exc:
            tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise StackError(f"PostgreSQL did not start: {exc.stderr.strip()}\n{tail}") from None
        self._bootstrap()

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            _as_postgres([str(self.pg_bin / "pg_ctl"), "stop", "-w", "-m", mode, "-D", str(self.data_dir)])

    def _bootstrap(self) -> None:
        """The citysense role, database and TimescaleDB extension (idempotent; services/store/migrate.py)."""
        bootstrap(self.superuser_dsn, self.secret("PG_CITYSENSE_PASSWORD"))


def dynsec_plugin() -> Path:
    """Mosquitto's dynamic security plugin, as Debian's ``mosquitto`` installs it (multiarch path)."""
    found = sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so")) + sorted(
        Path("/usr/lib").glob("mosquitto_dynamic_security.so"))
    if not found:
        raise StackError("Mosquitto's dynamic security plugin is missing: install Debian's mosquitto 2.x "
                         "(deploy/local/install.sh)")
    return found[0]


@dataclass
class MosquittoBroker:
    """A Mosquitto broker with its persistence in ``data_dir``: a plain listener on ``port`` (None: none)
    and, with ``ca``, a TLS listener on ``tls_port`` (client certificates required with
    ``require_certificate``). Accounts live in the dynamic security plugin: the admin account (which
    manages the others), and ingestor accounts added with ``add_ingestor``, all with passwords from
    ``passwords`` (kept by the caller: the local stack's secrets file, a test's memory)."""

    data_dir: Path
    port: int | None
    bind: str = "127.0.0.1"
    tls_port: int | None = None
    ca: LocalCA | None = None
    require_certificate: bool = False
    admin_password: str = field(default_factory=new_password)
    ingest_password: str = field(default_factory=new_password)
    ingestors: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    _control: Control | None = None

    @property
    def config_file(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    @property
    def dynsec_file(self) -> Path:
        return self.data_dir / "dynamic-security.json"

    def endpoint(self, tls: bool | None = None) -> Endpoint:
        """How a client reaches this broker (TLS when asked, or when there is no plain listener)."""
        tls = self.port is None if tls is None else tls
        if tls:
            return Endpoint("127.0.0.1", self.tls_port, True, self.ca.ca_file)
        return Endpoint("127.0.0.1", self.port)

    def _listeners(self, tls_dir: Path) -> str:
        out = []
        if self.port is not None:
            out.append(f"listener {self.port} {self.bind}")
        if self.tls_port is not None:
            out += [f"listener {self.tls_port} {self.bind}", f"cafile {tls_dir / 'ca.crt'}",
                    f"certfile {tls_dir / 'server.crt'}", f"keyfile {tls_dir / 'server.key'}", "tls_version tlsv1.2",
                    f"require_certificate {'true' if self.require_certificate else 'false'}"]
        return "\n".join(out)

    def start(self, timeout: float = 15) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise StackError("mosquitto is not installed: run deploy/local/install.sh (or `make run`)")
        log_file = self.data_dir / "mosquitto.log"
        # The broker reads its files after dropping to the mosquitto user: they live in its directory.
        tls_dir = self.data_dir / "tls"
        owned = [self.data_dir, log_file, self.config_file, self.dynsec_file]
        if self.tls_port is not None:
            tls_dir.mkdir(exist_ok=True)
            for src in (self.ca.ca_file, self.ca.server_cert, self.ca.server_key):
                shutil.copyfile(src, tls_dir / src.name)
                owned.append(tls_dir / src.name)
            owned.append(tls_dir)
        dynsec.write_config(self.dynsec_file, ADMIN_USERNAME, self.admin_password,
                            {cid: self.ingest_password for cid in self.ingestors})
        text = MOSQUITTO_TEMPLATE.read_text().format(
            data_dir=self.data_dir, log_dest=f"file {log_file}", dynsec_plugin=dynsec_plugin(),
            dynsec_file=self.dynsec_file, listeners=self._listeners(tls_dir),
        )
        self.config_file.write_text(text)
        log_file.touch()
        if os.geteuid() == 0:
            m = pwd.getpwnam("mosquitto")
            for p in owned:
                os.chown(p, m.pw_uid, m.pw_gid)
        self.process = subprocess.Popen([exe, "-c", str(self.config_file)], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            for port in (self.port, self.tls_port):
                if port is not None:
                    wait_for_port(self.bind, port, timeout)
        except StackError:
            self.process.kill()
            err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
            raise StackError(f"mosquitto did not start: {err.strip()} {log_file.read_text(errors='replace')[-1000:]}") from None

    def control(self) -> Control:
        """The admin account's connection (made once, kept)."""
        if self._control is None:
            self._control = Control(self.endpoint(), ADMIN_USERNAME, self.admin_password)
        return self._control

    def add_ingestor(self, client_id: str) -> str:
        """An ingestor account for ``client_id`` (with the broker's ingestor password, returned)."""
        if client_id not in self.ingestors:
            self.control().add_ingestor(client_id, self.ingest_password)
            self.ingestors = (*self.ingestors, client_id)
        return self.ingest_password

    def stop(self, timeout: float = 10) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
