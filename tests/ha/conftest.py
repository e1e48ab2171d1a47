"""A highly available database on this one machine, started by the test itself on free ports: etcd (the
consensus store) and two PostgreSQL/TimescaleDB nodes managed by Patroni, in synchronous mode, so a commit
is on both nodes before the ingestor acknowledges the message. Debian's `etcd-server` and `patroni`."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from services.launcher.stack import find_pg_bin, free_port, owned_dir, wait_for_port
from services.store.migrate import bootstrap, migrate
from tests.helpers import unique, wait_until

PATRONI = shutil.which("patroni") or "/usr/bin/patroni"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def rest(port: int, path: str) -> int:
    """The status code of Patroni's REST health check (200: this node is what ``path`` asks)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@dataclass
class Node:
    name: str
    pg_port: int
    api_port: int
    data_dir: Path
    config: Path
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        # cwd: a directory the postgres user may enter (the checkout may be under /root, mode 0700)
        self.proc = subprocess.Popen(["runuser", "-u", "postgres", "--", PATRONI, str(self.config)], cwd=self.config.parent,
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def role(self) -> str:
        return "primary" if rest(self.api_port, "/primary") == 200 else \
            "replica" if rest(self.api_port, "/replica") == 200 else "down"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        pid = self.postmaster_pid()
        if pid:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


@dataclass
class HACluster:
    nodes: list[Node]
    superuser_password: str
    citysense_password: str
    etcd: subprocess.Popen
    extra: dict = field(default_factory=dict)

    def primary(self) -> Node | None:
        found = [n for n in self.nodes if n.role() == "primary"]
        return found[0] if len(found) == 1 else None

    def dsn(self, role: str = "citysense", attrs: str = "read-write") -> str:
        """A libpq multi-host URL: the client finds the node that is primary by itself."""
        hosts = ",".join(f"127.0.0.1:{n.pg_port}" for n in self.nodes)
        password = self.citysense_password if role == "citysense" else self.superuser_password
        db = "citysense" if role == "citysense" else "postgres"
        return f"postgresql://{role}:{password}@{hosts}/{db}?target_session_attrs={attrs}&connect_timeout=3"


def _tail(path: Path, lines: int = 25) -> str:
    """A log without its repetitions (Patroni repeats its state every second): each message once, in order."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"({exc})"
    seen, out = set(), []
    for line in text:
        message = line[24:] if line[:2] == "20" else line  # without Patroni's timestamp
        if message not in seen:
            seen.add(message)
            out.append(line)
    return "\n".join(out[-4 * lines:])


def _patroni_config(scope: str, node: Node, etcd_port: int, socket_dir: Path, pg_bin: Path, su: str, repl: str) -> dict:
    return {
        "scope": scope, "name": node.name,
        "log": {"level": "INFO"},
        "restapi": {"listen": f"127.0.0.1:{node.api_port}", "connect_address": f"127.0.0.1:{node.api_port}"},
        "etcd3": {"hosts": [f"127.0.0.1:{etcd_port}"]},
        "bootstrap": {
            "dcs": {
                # fast enough for a test: the leader key lives 10 s, each node checks every second
                "ttl": 10, "loop_wait": 1, "retry_timeout": 3, "maximum_lag_on_failover": 1 << 20,
                # a commit waits for the standby: an acknowledged reading is on two nodes
                "synchronous_mode": True,
                # a crashed primary is failed over at once instead of restarted in place (safe in synchronous mode)
                "master_start_timeout": 0, "primary_start_timeout": 0,
                "postgresql": {"use_pg_rewind": True, "parameters": {
                    "shared_preload_libraries": "timescaledb", "timescaledb.telemetry_level": "off",
                    "max_connections": 100, "wal_log_hints": "on", "synchronous_commit": "on",
                    "max_wal_senders": 10, "max_replication_slots": 10, "hot_standby": "on"}},
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, {"auth-host": "scram-sha-256"}, {"auth-local": "trust"}],
            "pg_hba": ["local all all trust", "host replication replicator 127.0.0.1/32 scram-sha-256",
                       "host all all 127.0.0.1/32 scram-sha-256"],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{node.pg_port}", "connect_address": f"127.0.0.1:{node.pg_port}",
            "data_dir": str(node.data_dir), "bin_dir": str(pg_bin), "use_unix_socket": True,
            "pgpass": str(socket_dir / f"pgpass-{node.name}"),
            "authentication": {"superuser": {"username": "postgres", "password": su},
                               "replication": {"username": "replicator", "password": repl},
                               "rewind": {"username": "postgres", "password": su}},
            # the local socket lives in a directory only the postgres user reaches (local connections trust)
            "parameters": {"unix_socket_directories": str(socket_dir)},
        },
    }


@pytest.fixture(scope="module")
def ha(workdir):
    if not (Path(PATRONI).exists() and Path(ETCD).exists()):
        pytest.fail("patroni and etcd-server are needed (deploy/local/install.sh installs them)")
    root = owned_dir(workdir, unique("ha"), "postgres")
    os.chmod(root, 0o755)
    etcd_dir = root / "etcd"
    etcd_dir.mkdir()
    client, peer = free_port(), free_port()
    etcd = subprocess.Popen([ETCD, "--name", "e1", "--data-dir", str(etcd_dir / "data"),
                             "--listen-client-urls", f"http://127.0.0.1:{client}",
                             "--advertise-client-urls", f"http://127.0.0.1:{client}",
                             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-cluster", f"e1=http://127.0.0.1:{peer}", "--log-level", "warn"],
                            stdout=open(root / "etcd.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port("127.0.0.1", client, 20)
    sockets = root / "sockets"
    sockets.mkdir()
    shutil.chown(sockets, "postgres", "postgres")
    os.chmod(sockets, 0o700)
    su, repl, cs = unique("su"), unique("repl"), unique("cs")
    pg_bin = find_pg_bin()
    nodes = []
    for name in ("pg1", "pg2"):
        node = Node(name, free_port(), free_port(), root / name, root / f"{name}.yml", root / f"{name}.log")
        node.config.write_text(yaml.safe_dump(_patroni_config(f"citysense-{root.name}", node, client, sockets, pg_bin, su, repl)))
        shutil.chown(node.config, "postgres", "postgres")
        nodes.append(node)
    cluster = HACluster(nodes, su, cs, etcd)
    try:
        try:
            nodes[0].start()
            wait_until(lambda: nodes[0].role() == "primary", 90, interval=0.5, what="pg1 bootstrapped as primary")
            nodes[1].start()
            wait_until(lambda: rest(nodes[1].api_port, "/sync") == 200, 120, interval=0.5,
                       what="pg2 streaming as the synchronous standby")
        except AssertionError as exc:  # say why: the end of each log
            logs = [root / "etcd.log", nodes[0].log, *sorted((nodes[0].data_dir / "log").glob("*")), nodes[1].log]
            tails = "\n".join(f"--- {p.name}:\n{_tail(p)}" for p in logs)
            raise AssertionError(f"{exc}\n{tails}") from None
        bootstrap(cluster.dsn("postgres"), cs)
        migrate(cluster.dsn())
        yield cluster
    finally:
        for n in nodes:
            n.stop()
        etcd.terminate()
        etcd.wait(10)


