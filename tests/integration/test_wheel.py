"""The wheel is the whole product: built as a packager builds it, installed in a virtual environment
outside the checkout, and every command run from there against the real database and broker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import httpx
import psycopg
import pytest

from services.launcher.stack import free_port
from tests.helpers import REPO, count, unique, wait_until

pytestmark = pytest.mark.slow
SKIP = {".git", ".venv", ".citysense", "__pycache__", "build", "dist", ".pytest_cache", ".hypothesis", "node_modules"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, wheel): the wheel built with `python -m build` from a copy of the source tree, installed
    with pip in a new virtual environment; neither lives in the checkout."""
    # Where other users may read it, as a packager installs (/opt): `up` then runs its services unprivileged.
    root = Path(tempfile.mkdtemp(prefix="citysense-wheel-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    src = root / "src"
    shutil.copytree(REPO, src, ignore=lambda d, names: [n for n in names if n in SKIP or n.endswith(".egg-info")])
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(root / "dist"), str(src)],
                   check=True, capture_output=True, timeout=240)
    wheel = next((root / "dist").glob("citysense-*.whl"))
    venv = root / "venv"
    # The system's Python where there is one (what a Debian package or a container would use)
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, capture_output=True, timeout=600)
    yield venv, wheel
    shutil.rmtree(root, ignore_errors=True)


def _env(**settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CITYSENSE_", "PYTHON"))}
    env.update({f"CITYSENSE_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def _run(venv: Path, cwd: Path, *args, **settings) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "citysense"), *args], cwd=cwd, env=_env(**settings),
                          capture_output=True, text=True, timeout=120)


def _start(venv: Path, cwd: Path, *args, **settings) -> subprocess.Popen:
    return subprocess.Popen([str(venv / "bin" / "citysense"), *args], cwd=cwd, env=_env(**settings),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _empty_database(pg, name: str) -> str:
    with psycopg.connect(pg.superuser_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} OWNER citysense")
    with psycopg.connect(pg.superuser_dsn.rsplit("/", 1)[0] + f"/{name}", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION timescaledb")
    return pg.dsn.rsplit("/", 1)[0] + f"/{name}"


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_wheel_carries_the_schema_broker_template_fleet_and_boundaries(installed):
    names = set(zipfile.ZipFile(installed[1]).namelist())
    for f in (REPO / "migrations").glob("*.sql"):
        assert f"services/migrations/{f.name}" in names
    # the dashboard and its libraries (copied from npm by the install script), the API documentation's files
    assert {"services/api/dashboard/static/index.html", "services/api/dashboard/static/app.js",
            "services/api/dashboard/static/vendor/leaflet.js", "services/api/dashboard/static/vendor/leaflet.css",
            "services/api/dashboard/static/vendor/uPlot.iife.min.js"} <= names
    assert {"services/deploy/mosquitto/mosquitto.conf.template", "simulators/baltimore_fleet.json",
            "services/core/data/csas.geojson", "services/core/data/neighbourhoods.geojson"} <= names


def test_installed_wheel_migrates_an_empty_database_to_the_full_schema(installed, pg, dsn, tmp_path):
    venv, _ = installed
    target = _empty_database(pg, "wheel_" + unique("m").replace("-", "_"))
    r = _run(venv, tmp_path, "migrate", database_url=target)
    assert r.returncode == 0, r.stderr
    assert _tables(target) == _tables(dsn)
    assert count(target, "SELECT count(*) FROM metrics") == 12


def test_installed_services_find_everything_they_need(installed, pg, broker, tmp_path):
    venv, _ = installed
    target = _empty_database(pg, "wheel_" + unique("s").replace("-", "_"))
    assert _run(venv, tmp_path, "migrate", database_url=target).returncode == 0
    api_port, metrics_port = free_port(), free_port()
    token = "wheel-admin-token-0123456789"
    common = dict(mqtt_url=f"mqtts://127.0.0.1:{broker.tls_port}", mqtt_ca_file=broker.ca.ca_file)
    api = _start(venv, tmp_path, "api", api_port=api_port, admin_token=token, database_url=target,
                 mqtt_admin_password=broker.admin_password, **common)
    ingest_id = unique("wheel")
    ingest = _start(venv, tmp_path, "ingest", ingest_metrics_port=metrics_port, ingest_client_id=ingest_id,
                    mqtt_password=broker.add_ingestor(ingest_id), database_url=target, **common)
    try:
        wait_until(lambda: _ready(f"http://127.0.0.1:{api_port}/readyz"), 30, what="the installed API's readiness")
        wait_until(lambda: _ready(f"http://127.0.0.1:{metrics_port}/readyz"), 30, what="the installed ingestor's readiness")
        sim = _run(venv, tmp_path, "simulate", "--devices", "5", "--duration", "3", "--interval", "1",
                   sim_api_url=f"http://127.0.0.1:{api_port}", admin_token=token,
                   sim_credentials_file=tmp_path / "creds.json", **common)
        assert sim.returncode == 0, sim.stderr[-2000:]
        # the fleet shipped in the wheel was registered and its readings stored
        assert count(target, "SELECT count(*) FROM devices WHERE device_id LIKE 'sim-%%'") == 5
        wait_until(lambda: count(target, "SELECT count(*) FROM readings") > 0, 20, what="simulated readings")
    finally:
        assert _stop(ingest) == 0
        _stop(api)


def _service_users(venv: Path) -> dict[str, str]:
    """command (ingest, api) → the user name of the running process of this installation."""
    import pwd

    found = {}
    for d in Path("/proc").iterdir():
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
            if args and args[0].decode().startswith(str(venv)) and b"services.launcher.cli" in args:
                found[args[args.index(b"services.launcher.cli") + 1].decode()] = pwd.getpwuid(d.stat().st_uid).pw_name
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_installed_up_runs_the_stack_from_outside_the_checkout(installed):
    venv, _ = installed
    ports = {k: free_port() for k in ("pg", "mqtt", "mqtts", "api", "metrics")}
    home = Path(tempfile.mkdtemp(prefix="citysense-home-", dir="/var/tmp"))
    os.chmod(home, 0o755)  # the postgres, mosquitto and citysense users must reach their directories
    proc = _start(venv, home, "up", "--no-simulator", home=home / "home", pg_port=ports["pg"],
                  mqtt_port=ports["mqtt"], mqtt_tls_port=ports["mqtts"], api_port=ports["api"],
                  ingest_metrics_port=ports["metrics"])
    try:
        wait_until(lambda: _ready(f"http://127.0.0.1:{ports['api']}/readyz"), 120, interval=0.5, what="`up` from the wheel")
        wait_until(lambda: _ready(f"http://127.0.0.1:{ports['metrics']}/readyz"), 30, what="its ingestor")
        # the dashboard and the documentation, with every file they load, from the installed package
        base = f"http://127.0.0.1:{ports['api']}"
        for path in ("/", "/static/app.js", "/static/vendor/leaflet.js", "/static/vendor/uPlot.iife.min.js",
                     "/docs", "/static/docs/swagger-ui-bundle.js"):
            assert httpx.get(base + path, timeout=10).status_code == 200, path
        # the services that parse what strangers send do not run as root
        assert _service_users(venv) == {"ingest": "citysense", "api": "citysense"}
    finally:
        assert _stop(proc) == 0
        shutil.rmtree(home, ignore_errors=True)


def test_migrate_refuses_when_the_installation_lost_its_migrations(installed, pg, tmp_path):
    venv, _ = installed
    site = next(venv.glob("lib/python*/site-packages"))
    broken = tmp_path / "venv"
    shutil.copytree(venv, broken, symlinks=True)
    for f in (broken / site.relative_to(venv) / "services" / "migrations").glob("*.sql"):
        f.unlink()
    # the copied venv's scripts point at the original interpreter path: run the module with the copy's python
    r = subprocess.run([str(broken / "bin" / "python"), "-m", "services.launcher.cli", "migrate"], cwd=tmp_path,
                       env=_env(database_url=_empty_database(pg, "wheel_" + unique("e").replace("-", "_"))),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "no migration files" in r.stderr
