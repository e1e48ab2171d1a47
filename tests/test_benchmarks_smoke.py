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
    printed = capsys.readouterr().out
    assert "citysense ingestor, 1 process" in printed
    # where each uncached request's CPU went, for the API and for the bare question beside it
    summary = results["api"]["classes"]["city-wide summary"]
    assert summary["no cache"]["cpu"]["api_ms"] > 0 and summary["no cache"]["cpu"]["client_ms"] > 0
    assert summary["raw"]["cpu"]["client_ms"] > 0
    assert "Where the CPU of one uncached request goes" in printed
