"""Session fixtures: a real PostgreSQL cluster with TimescaleDB and a real Mosquitto broker, on free
ports in throw-away directories, started once per test session; the API and an ingestor run against
them as real processes."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from services.store.migrate import migrate
from services.launcher.stack import MosquittoBroker, PostgresCluster, free_port, owned_dir, wait_for_port
from services.broker.tls import LocalCA
from tests.helpers import REPO, Publisher, Service, close_links, service_env, wait_until


@pytest.fixture(scope="session")
def workdir(request):
    root = Path(tempfile.mkdtemp(prefix="citysense-test-"))
    os.chmod(root, 0o755)  # the postgres and mosquitto users must reach their directories
    yield root
    if request.session.testsfailed:  # keep the services' logs of a failed run (CI included) for a look
        kept = REPO / ".citysense" / "test-logs" / root.name
        kept.mkdir(parents=True, exist_ok=True)
        for log in [*root.glob("*.log"), *root.glob("*/citysense-server.log"), *root.glob("*/mosquitto.log")]:
            shutil.copy(log, kept / f"{log.parent.name}-{log.name}" if log.parent != root else kept / log.name)
        print(f"\nservice logs of this failed run: {kept}")
    shutil.rmtree(root, ignore_errors=True)


def make_cluster(workdir: Path, name: str) -> PostgresCluster:
    cluster = PostgresCluster(owned_dir(workdir, name, "postgres"), free_port(), workdir / f"{name}.secrets")
    cluster.init()
    cluster.start()
    migrate(cluster.dsn)
    return cluster


def local_ca(workdir: Path) -> LocalCA:
    return LocalCA(workdir / "tls").ensure()


def make_broker(workdir: Path, name: str, **kw) -> MosquittoBroker:
    """A broker as `citysense up` runs it: accounts required (dynamic security), a plain listener on
    loopback and a TLS one, both on free ports."""
    broker = MosquittoBroker(owned_dir(workdir, name, "mosquitto"), free_port(), tls_port=free_port(),
                             ca=local_ca(workdir), **kw)
    broker.start()
    return broker


@pytest.fixture(scope="session")
def pg(workdir):
    cluster = make_cluster(workdir, "pg")
    yield cluster
    cluster.stop("immediate")


@pytest.fixture(scope="session")
def dsn(pg) -> str:
    return pg.dsn


@pytest.fixture(scope="session")
def broker(workdir):
    b = make_broker(workdir, "mosquitto")
    yield b
    close_links()
    b.stop()


@pytest.fixture(scope="session")
def ingestor(workdir, dsn, broker):
    """The session's ingestor: every test that publishes to the session broker is served by it."""
    env = service_env(dsn, broker)
    svc = Service("ingest", env, workdir / "ingest.log").start()
    svc.metrics_port = int(env["CITYSENSE_INGEST_METRICS_PORT"])
    wait_for_port("127.0.0.1", svc.metrics_port, 30)
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def api(workdir, dsn, broker):
    env = service_env(dsn, broker)
    svc = Service("api", env, workdir / "api.log").start()
    base = f"http://127.0.0.1:{env['CITYSENSE_API_PORT']}"
    wait_until(lambda: _ok(base + "/healthz"), 30, what="the API")
    svc.base_url = base
    svc.token = env["CITYSENSE_ADMIN_TOKEN"]
    yield svc
    svc.stop()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def http(api):
    with httpx.Client(base_url=api.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def admin(api):
    return {"Authorization": f"Bearer {api.token}"}


@pytest.fixture
def publisher(broker):
    p = Publisher(broker)
    yield p
    p.close()


@pytest.fixture(scope="module")
def http_module(api):
    with httpx.Client(base_url=api.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def admin_module(api):
    return {"Authorization": f"Bearer {api.token}"}


@pytest.fixture(scope="module")
def publisher_module(broker):
    p = Publisher(broker)
    yield p
    p.close()
