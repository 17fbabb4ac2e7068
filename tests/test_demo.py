"""The demo end to end on CPU (small settings): SFT, PRM, three modes, the report; a re-run resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BSTAR_PL = str(Path(sys.executable).with_name("bstar-pl"))


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    args = [BSTAR_PL, "demo", "--out", str(out), "--iterations", "1", "--sft_epochs", "2", "--prm_problems", "20"]
    args += ["--prm_epochs", "1"]
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"}
    with open(tmp_path / "log.txt", "wb") as log:
        done = subprocess.run(args, stdout=log, stderr=log, env=env, timeout=1500)
    assert done.returncode == 0, (tmp_path / "log.txt").read_text()[-3000:]
    for name in ("base/config.json", "data/test.jsonl", "sft/policy/model.safetensors", "prm/model/config.json"):
        assert (out / name).exists(), name
    for mode in ("bstar", "online_rft", "control"):
        assert (out / "runs" / f"{mode}_seed0" / "iter_01" / "metrics.json").exists(), mode
    report = (out / "report" / "report.md").read_text()
    assert "bstar" in report and "online_rft" in report and "control" in report
    metrics = json.loads((out / "runs" / "bstar_seed0" / "iter_01" / "metrics.json").read_text())
    assert metrics["selected"]["size"] > 0 and "balance_score" in metrics["search"]
    # Everything exists now: a second run trains and samples nothing.
    stamp = (out / "runs" / "bstar_seed0" / "iter_01" / "samples.jsonl").stat().st_mtime_ns
    with open(tmp_path / "log2.txt", "wb") as log:
        done = subprocess.run(args, stdout=log, stderr=log, env=env, timeout=600)
    assert done.returncode == 0
    assert (out / "runs" / "bstar_seed0" / "iter_01" / "samples.jsonl").stat().st_mtime_ns == stamp
