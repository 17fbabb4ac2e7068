"""The demo end to end on CPU (small settings): every artefact appears, and a re-run resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bstar_pl.demo import demo
from bstar_pl.records import Sample, read_jsonl


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    metrics = demo(out, sft_epochs=1, temperatures=(0.5, 1.0), samples_per_problem=2, problems=10, max_new_tokens=48)
    for name in ("base/config.json", "data/test.jsonl", "sft/policy/model.safetensors", "samples.jsonl"):
        assert (out / name).exists(), name
    assert set(metrics["pool_sampled"]) == {"0.50", "1.00"}
    assert len(read_jsonl(out / "samples.jsonl", Sample)) == 10 * 2 * 2
    assert list(out.glob("sft/logs/*/events.out.tfevents.*")), "TensorBoard logs"
    assert json.loads((out / "metrics.json").read_text()) == metrics
    # Every phase's artefact exists now: a second run trains and samples nothing and agrees.
    stamp = (out / "samples.jsonl").stat().st_mtime_ns
    assert demo(out, sft_epochs=1, temperatures=(0.5, 1.0), samples_per_problem=2, problems=10) == metrics
    assert (out / "samples.jsonl").stat().st_mtime_ns == stamp
