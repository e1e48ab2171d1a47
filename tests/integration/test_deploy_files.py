"""The production files in deploy/, each checked by the tool that consumes it: systemd-analyze for the
units, kubectl kustomize and the Kubernetes schema for the manifests, promtool for the alerting rules,
and real scrapes of the running services for every metric the rules and the dashboard query."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import REPO

DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent


# -- systemd -----------------------------------------------------------------------------------------
UNITS = ("citysense-migrate.service", "citysense-api.service", "citysense-ingest@.service", "citysense.target")


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    # The units name the installed entry point /opt/citysense/venv/bin/citysense; verify checks that the
    # executable exists, so here it points at this environment's own entry point (same program).
    for name in UNITS:
        text = (DEPLOY / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/citysense/venv/bin/citysense", str(BIN / "citysense")))
    args = [str(tmp_path / n) for n in UNITS] + [str(tmp_path / "citysense-ingest@1.service")]
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *args], capture_output=True, text=True, timeout=60)
    # verify exits 0 on settings it ignores; any diagnostic at all is a defect in the unit files
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stderr + r.stdout


def test_systemd_services_run_sandboxed_as_citysense_from_one_environment_file():
    for name in UNITS[:3]:
        text = (DEPLOY / "systemd" / name).read_text()
        for line in ("User=citysense", "EnvironmentFile=/etc/citysense/citysense.env", "NoNewPrivileges=yes",
                     "ProtectSystem=strict", "CapabilityBoundingSet=", "PrivateTmp=yes"):
            assert f"\n{line}\n" in text, f"{name} lacks {line}"
    ingest = (DEPLOY / "systemd" / "citysense-ingest@.service").read_text()
    assert "CITYSENSE_INGEST_CLIENT_ID=citysense-ingest-%H-%i" in ingest  # one client id per host and instance
    for name in UNITS[1:3]:
        text = (DEPLOY / "systemd" / name).read_text()
        assert "Requires=citysense-migrate.service" in text and "After=citysense-migrate.service" in text
    env = (DEPLOY / "systemd" / "citysense.env").read_text()
    assert "CITYSENSE_INGEST_SHARE_GROUP=" in env
    assert "CITYSENSE_MQTT_URL=mqtts://" in env and "CITYSENSE_MQTT_CA_FILE=" in env  # TLS, verified
    # the admin's secrets are the API's only: not in the file every unit reads
    assert "ADMIN" not in env
    api_env = (DEPLOY / "systemd" / "api.env").read_text()
    assert "CITYSENSE_ADMIN_TOKEN=" in api_env and "CITYSENSE_MQTT_ADMIN_PASSWORD=" in api_env
    assert "\nEnvironmentFile=/etc/citysense/api.env\n" in (DEPLOY / "systemd" / "citysense-api.service").read_text()
    for name in UNITS[:3]:
        if name != "citysense-api.service":
            assert "api.env" not in (DEPLOY / "systemd" / name).read_text()


def test_systemd_ha_variant_drop_ins_are_read_by_systemd(tmp_path):
    """The HA drop-ins extend the units (systemd reads NAME.service.d/*.conf beside a unit it verifies) and the
    Patroni drop-in extends Debian's own patroni.service; a mistake in either is a diagnostic here."""
    ha = DEPLOY / "systemd" / "ha"
    for name in UNITS:
        text = (DEPLOY / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/citysense/venv/bin/citysense", str(BIN / "citysense")))
    for d in ha.glob("*.d"):
        shutil.copytree(d, tmp_path / d.name)
    broken = tmp_path / "citysense-api.service.d" / "zz-typo.conf"
    broken.write_text("[Service]\nEnvironmentFiel=/etc/citysense/ha.env\n")  # proves the drop-ins are read
    patroni = Path("/lib/systemd/system/patroni.service")
    shutil.copy(patroni, tmp_path / "patroni.service")
    args = [str(tmp_path / n) for n in (*UNITS, "patroni.service")] + [str(tmp_path / "citysense-ingest@1.service")]

    def verify():
        return subprocess.run(["systemd-analyze", "verify", "--man=no", *args], capture_output=True, text=True, timeout=60)
    r = verify()
    assert "EnvironmentFiel" in r.stderr + r.stdout, "systemd did not read the drop-in directory"
    broken.unlink()
    r = verify()
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stderr + r.stdout
    for name in ("citysense-api.service", "citysense-ingest@.service", "citysense-migrate.service"):
        assert "EnvironmentFile=/etc/citysense/ha.env" in (ha / f"{name}.d" / "ha.conf").read_text()


def test_systemd_ha_env_urls_parse_as_libpq_and_citysense_read_them(monkeypatch):
    import psycopg

    from services.broker.connect import Endpoint
    from services.core.settings import Settings

    env = dict(line.split("=", 1) for line in (DEPLOY / "systemd" / "ha" / "ha.env").read_text().splitlines()
               if line and not line.startswith("#"))
    for url, attrs in ((env["CITYSENSE_DATABASE_URL"], "read-write"), (env["CITYSENSE_API_READ_DATABASE_URL"], "prefer-standby")):
        info = psycopg.conninfo.conninfo_to_dict(url)  # libpq's own parser
        assert len(info["host"].split(",")) == 3 and info["target_session_attrs"] == attrs
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    assert [e.host for e in Endpoint.all_of(settings)] == ["mqtt1.example.internal", "mqtt2.example.internal"]


# -- Kubernetes ----------------------------------------------------------------------------------------
def _render(path: Path) -> list[dict]:
    kubectl = BIN / "kubectl" if (BIN / "kubectl").exists() else shutil.which("kubectl")
    r = subprocess.run([str(kubectl), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.fixture(scope="module")
def overlay() -> list[dict]:
    return _render(DEPLOY / "kubernetes" / "overlays" / "example")


def test_every_rendered_kubernetes_object_is_valid_against_the_schema(overlay):
    base = _render(DEPLOY / "kubernetes" / "base")
    assert len(overlay) > len(base) >= 9
    for doc in [*base, *overlay]:
        kubernetes_validate.validate(doc, latest_version(), strict=True)


def test_the_ha_overlay_reaches_the_primary_by_itself_and_reads_from_standbys():
    docs = _render(DEPLOY / "kubernetes" / "overlays" / "ha")
    for doc in docs:
        kubernetes_validate.validate(doc, latest_version(), strict=True)
    secret = _one(docs, "Secret", "citysense-db-ha")
    import base64
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["CITYSENSE_DATABASE_URL"].count(":5432") == 3 and "target_session_attrs=read-write" in data["CITYSENSE_DATABASE_URL"]
    assert "target_session_attrs=prefer-standby" in data["CITYSENSE_API_READ_DATABASE_URL"]
    for kind, name in (("Deployment", "citysense-api"), ("StatefulSet", "citysense-ingest"), ("Job", "citysense-migrate")):
        env = {e["name"]: e for e in _one(docs, kind, name)["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["CITYSENSE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]


def test_the_patroni_configuration_passes_patroni_validate_config(tmp_path):
    """deploy/patroni/patroni.yml, with this machine's addresses and PostgreSQL, as `patroni --validate-config`
    reads it (it resolves the hosts and checks the binaries)."""
    patroni = shutil.which("patroni")
    assert patroni, "patroni is needed (deploy/local/install.sh installs it)"
    from services.launcher.stack import find_pg_bin
    text = (DEPLOY / "patroni" / "patroni.yml").read_text()
    doc = yaml.safe_load(text)
    assert doc["bootstrap"]["dcs"]["synchronous_mode"] is True and doc["bootstrap"]["dcs"]["primary_start_timeout"] == 0
    from services.launcher.stack import free_port, wait_for_port
    client, peer = free_port(), free_port()
    etcd = subprocess.Popen([shutil.which("etcd") or "/usr/bin/etcd", "--data-dir", str(tmp_path / "etcd"),
                             "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls",
                             f"http://127.0.0.1:{client}", "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", client, 20)
        # the etcd members: a real one here; the nodes' addresses: this host's name (validate refuses loopback)
        for n in (1, 2, 3):
            text = text.replace(f"etcd{n}.example.internal:2379", f"127.0.0.1:{client}")
        text = text.replace("db1.example.internal", socket.gethostname()).replace("/usr/lib/postgresql/17/bin", str(find_pg_bin())) \
            .replace("/var/lib/postgresql/17/citysense", str(tmp_path / "data"))
        (tmp_path / "patroni.yml").write_text(text)
        r = subprocess.run([patroni, "--validate-config", str(tmp_path / "patroni.yml")], capture_output=True, text=True,
                           timeout=60)
    finally:
        etcd.terminate()
        etcd.wait(10)
    assert r.returncode == 0, r.stdout + r.stderr


def _one(docs, kind, name):
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name))


def test_kubernetes_api_ingestors_migrations_and_secrets_are_wired(overlay):
    assert {d["metadata"].get("namespace") for d in overlay if d["kind"] != "Namespace"} == {"citysense"}
    api = _one(overlay, "Deployment", "citysense-api")["spec"]
    c = api["template"]["spec"]["containers"][0]
    assert api["replicas"] >= 2 and c["args"] == ["api"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["resources"]["requests"] and c["resources"]["limits"]
    ingest = _one(overlay, "StatefulSet", "citysense-ingest")["spec"]
    ic = ingest["template"]["spec"]["containers"][0]
    assert ingest["replicas"] == 3 and ic["args"] == ["ingest"]
    client_id = next(e for e in ic["env"] if e["name"] == "CITYSENSE_INGEST_CLIENT_ID")
    assert client_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert ic["readinessProbe"]["httpGet"]["path"] == "/readyz" and ic["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert _one(overlay, "PodDisruptionBudget", "citysense-ingest")
    job = _one(overlay, "Job", "citysense-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == ["migrate"]
    secret = _one(overlay, "Secret", "citysense-secrets")
    assert {"CITYSENSE_DATABASE_URL", "CITYSENSE_MQTT_PASSWORD"} <= set(secret["data"])
    api_secret = _one(overlay, "Secret", "citysense-api-secrets")  # the admin's secrets: the API's only
    assert {"CITYSENSE_ADMIN_TOKEN", "CITYSENSE_MQTT_ADMIN_PASSWORD"} <= set(api_secret["data"])
    refs = {r["secretRef"]["name"] for r in c["envFrom"] if "secretRef" in r}
    # the generated names (with their hashes) are what the pods use
    assert refs == {secret["metadata"]["name"], api_secret["metadata"]["name"]}
    assert {r["secretRef"]["name"] for r in ic["envFrom"] if "secretRef" in r} == {secret["metadata"]["name"]}
    # the broker over TLS only, verified against the CA mounted where the settings say
    config = _one(overlay, "ConfigMap", "citysense-config")["data"]
    assert config["CITYSENSE_MQTT_CA_FILE"] == "/etc/citysense/tls/ca.crt"
    ca = next(d for d in overlay if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("citysense-mqtt-ca"))
    for ctr, pod in ((c, api), (ic, ingest)):
        mount = next(m for m in ctr["volumeMounts"] if m["mountPath"] == "/etc/citysense/tls")
        volume = next(v for v in pod["template"]["spec"]["volumes"] if v["name"] == mount["name"])
        assert volume["configMap"]["name"] == ca["metadata"]["name"] and "ca.crt" in ca["data"]
    env = dict(line.split("=", 1) for line in (DEPLOY / "kubernetes" / "overlays" / "example" / "secrets.env")
               .read_text().splitlines() if "=" in line)
    assert env["CITYSENSE_MQTT_URL"].startswith("mqtts://")
    for d in overlay:
        pod = d["spec"].get("template", {}).get("spec") if d["kind"] in ("Deployment", "StatefulSet", "Job") else None
        if pod:
            assert pod["securityContext"]["runAsNonRoot"] is True
            for ctr in pod["containers"]:
                assert ctr["image"] == "registry.example.gov/citysense:0.1.0"
                assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
    scrape = yaml.safe_load(_one(overlay, "ConfigMap", "citysense-prometheus-scrape")["data"]["citysense-scrape.yml"])
    assert scrape["scrape_configs"][0]["kubernetes_sd_configs"] == [{"role": "pod"}]


# -- Prometheus and Grafana ----------------------------------------------------------------------------
RULES = DEPLOY / "prometheus" / "citysense-rules.yml"


def test_alerting_rules_pass_promtool_check_and_their_unit_tests():
    check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(["promtool", "test", "rules", RULES.with_name("citysense-rules.test.yml").name],
                          cwd=RULES.parent, capture_output=True, text=True, timeout=120)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tested = set(re.findall(r"alertname: (\w+)", RULES.with_name("citysense-rules.test.yml").read_text()))
    assert alerts == tested, f"alerts without a unit test: {alerts - tested}"


def _exported(url: str) -> dict[str, set[str]]:
    """Every sample name a service exports, with the label names it carries."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        out.setdefault(family.name, set())
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def _queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "citysense-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    return exprs


def test_every_query_of_the_dashboard_and_rules_uses_a_metric_the_services_export(ingestor, api, http):
    http.get("/livez")  # a request, so the request counters have a series
    exported = _exported(f"http://127.0.0.1:{ingestor.metrics_port}/metrics") | _exported(f"{api.base_url}/metrics")
    queries = _queries()
    assert len(queries) >= 20
    used = set()
    for expr in queries:
        for name, selector in re.findall(r"(citysense_[a-z0-9_]+)(\{[^}]*\})?", expr):
            used.add(name)
            assert name in exported, f"{name} (in {expr!r}) is not exported by the ingestor or the API"
            for label in re.findall(r"(\w+)\s*[=!]~?", selector):
                assert label in exported[name], f"{name} has no label {label!r} (in {expr!r})"
        for labels in re.findall(r"by \(([^)]*)\)", expr):
            for label in (x.strip() for x in labels.split(",")):
                assert label == "le" or any(label in exported[n] for n in re.findall(r"citysense_[a-z0-9_]+", expr)), \
                    f"no metric of {expr!r} carries the label {label!r}"
    assert {"citysense_ingest_lag_seconds_bucket", "citysense_api_requests_total", "citysense_devices_silent"} <= used
