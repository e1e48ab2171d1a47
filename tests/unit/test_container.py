"""The image definition's contract with the deployment files (podman cannot run containers on the test
machines: deploy/container/README.md says why; tests/integration/test_wheel.py runs what the image runs)."""

import re

import yaml

from tests.helpers import REPO

CONTAINERFILE = (REPO / "deploy" / "container" / "Containerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", CONTAINERFILE)
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_image_installs_the_wheel_and_runs_citysense_as_an_unprivileged_user():
    final = _instructions()
    final = final[max(i for i, (k, _) in enumerate(final) if k == "FROM"):]  # the last stage is the image
    runs = " ".join(v for k, v in final if k == "RUN")
    assert "pip install" in runs and "citysense-*.whl" in runs
    user = [v for k, v in final if k == "USER"]
    assert user and not user[-1].startswith(("0", "root"))
    assert [v for k, v in final if k == "ENTRYPOINT"] == ['["citysense"]']
    exposed = {int(p) for k, v in final if k == "EXPOSE" for p in v.split()}
    assert exposed == {8000, 9101}


def test_the_kubernetes_pods_run_as_the_images_user():
    uid = int(next(v for k, v in _instructions()[::-1] if k == "USER").split(":")[0])
    for name in ("api.yaml", "ingest.yaml", "migrate-job.yaml"):
        for doc in yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "base" / name).read_text()):
            spec = doc["spec"].get("template", {}).get("spec")
            if spec:
                assert spec["securityContext"]["runAsUser"] == uid
