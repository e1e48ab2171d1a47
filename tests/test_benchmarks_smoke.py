"""Each benchmark runs end to end at a tiny size: the harness works and its counts check out. No timing
is asserted here; the figures live in the README, measured by `make bench`."""

import json

import pytest

from benchmarks import run

pytestmark = pytest.mark.slow


def test_benchmarks_run_at_a_tiny_size(tmp_path, capsys):
    out = tmp_path / "smoke"
    assert run.main(["--smoke", "--out", str(out)]) == 0
    results = json.loads((tmp_path / "smoke.json").read_text())
    ingest = results["ingest"]
    assert ingest["citysense_1"]["runs"][0]["readings"] == 5 * ingest["n_messages"]
    assert ingest["broker_c"]["runs"][0]["messages"] == ingest["n_messages"]
    assert ingest["lag"]["messages"] > 0
    assert "citysense ingestor, 1 process" in capsys.readouterr().out
