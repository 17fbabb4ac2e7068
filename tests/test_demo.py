"""The demo end to end on CPU (small settings): SFT, PRM, four modes in two worker processes, summary.json,
the report; a re-run resumes and trains nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bstar_pl.demo import Job, iterate_args, schedule
from bstar_pl.tasks.curriculum import write_splits

ROOT = Path(__file__).resolve().parents[1]
BSTAR_PL = str(Path(sys.executable).with_name("bstar-pl"))


def small_config(path: Path) -> Path:
    """configs/iterate/tiny.yaml cut down to seconds: a few queries, samples and steps."""
    cfg = yaml.safe_load((ROOT / "configs" / "iterate" / "tiny.yaml").read_text())
    cfg["data"].update(pool_size=24, search_size=8)
    cfg["search"].update(samples=2, temperatures={"start": 0.8, "stop": 1.2, "step": 0.4})
    cfg["selection"]["n_target"] = 48
    cfg["sampling"]["samples"] = 2
    cfg["train"].update(steps=4, micro_batch_size=8, checkpoint_every=2, warmup_steps=1)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.engine
@pytest.mark.fit
@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    write_splits(out / "data", n_sft=512, n_pool=24, n_dev=16, n_test=20)  # the demo keeps existing data
    config = small_config(tmp_path / "iterate.yaml")
    args = [BSTAR_PL, "demo", "--out", str(out), "--iterate_config", str(config), "--iterations", "1"]
    args += ["--sft_epochs", "1", "--prm_problems", "8", "--prm_epochs", "1"]
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"}
    with open(tmp_path / "log.txt", "wb") as log:
        done = subprocess.run(args, stdout=log, stderr=log, env=env, timeout=1500, cwd=ROOT)
    assert done.returncode == 0, (tmp_path / "log.txt").read_text()[-3000:]
    for name in ("base/config.json", "sft/policy/model.safetensors", "prm/model/config.json"):
        assert (out / name).exists(), name
    modes = ("bstar", "online_rft", "control", "oracle")
    p0 = (out / "p0" / "iter_00" / "test_test.jsonl").read_bytes()  # P0 is evaluated once, and every run grades it
    for mode in modes:
        assert (out / "runs" / f"{mode}_seed0" / "iter_01" / "metrics.json").exists(), mode
        assert (out / "logs" / f"{mode}_seed0.log").exists()
        assert (out / "runs" / f"{mode}_seed0" / "iter_00" / "test_test.jsonl").read_bytes() == p0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"hard_levels", "test_size", "hard_size", "seconds", "p0", "methods"}
    assert summary["hard_levels"] == [4, 5] and (summary["test_size"], summary["hard_size"]) == (60, 40)
    assert set(summary["methods"]) == set(modes) and set(summary["p0"]) == {"pass1", "pass1_hard"}
    for mode in modes:
        (entry,) = summary["methods"][mode]
        assert set(entry) == {"seed", "pass1", "pass1_hard", "temperature", "threshold"}
        assert len(entry["pass1"]) == len(entry["pass1_hard"]) == 2 and len(entry["temperature"]) == 1
        assert entry["pass1"][0] == summary["p0"]["pass1"] and 0 <= entry["pass1_hard"][1] <= 1
    assert summary["methods"]["online_rft"][0]["temperature"] == [1.0]
    assert summary["methods"]["control"][0]["temperature"] == [None]
    report = (out / "report" / "report.md").read_text()
    assert report.index("greedy Pass@1 on levels 4, 5") < report.index("| group |")  # the report leads with it
    assert (out / "report" / "hard_test.png").stat().st_size > 0
    metrics = json.loads((out / "runs" / "bstar_seed0" / "iter_01" / "metrics.json").read_text())
    assert metrics["selected"]["size"] > 0 and "balance_score" in metrics["search"]
    assert "by_level" in metrics["test"]["test"]
    # Everything exists now: a second run trains and samples nothing.
    stamp = (out / "runs" / "bstar_seed0" / "iter_01" / "samples.jsonl").stat().st_mtime_ns
    with open(tmp_path / "log2.txt", "wb") as log:
        done = subprocess.run(args, stdout=log, stderr=log, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0
    assert (out / "runs" / "bstar_seed0" / "iter_01" / "samples.jsonl").stat().st_mtime_ns == stamp


def test_iterate_args_are_the_tiny_config_with_the_runs_paths(tmp_path: Path) -> None:
    """A demo run is configs/iterate/tiny.yaml with its mode, seed and paths replaced, nothing else."""
    from jsonargparse import CLI

    from bstar_pl.config import Config

    yaml_config = ROOT / "configs" / "iterate" / "tiny.yaml"
    argv = iterate_args(yaml_config, tmp_path, tmp_path / "runs" / "control_seed2", "control", 2, 3, None)
    parsed = CLI(Config, args=argv[argv.index("iterate") + 1 :], as_positional=False)
    plain = CLI(Config, args=["--config", str(yaml_config)], as_positional=False)
    assert (parsed.mode, parsed.seed, parsed.iterations, parsed.reward.prm) == ("control", 2, 3, None)
    assert parsed.data.pool == tmp_path / "data" / "pool.jsonl" and parsed.policy == tmp_path / "sft" / "policy"
    assert parsed.data.tests["test"].path == tmp_path / "data" / "test.jsonl"
    assert (parsed.search, parsed.selection, parsed.sampling, parsed.train) == (
        plain.search,
        plain.selection,
        plain.sampling,
        plain.train,
    )


def test_schedule_waits_for_dependencies_and_stops_at_a_failure(tmp_path: Path) -> None:
    py = sys.executable
    order = tmp_path / "order.txt"
    write = lambda name: [py, "-c", f"open({str(order)!r}, 'a').write({name!r} + chr(10))"]  # noqa: E731
    prepared = lambda: order.open("a").write("prepare-b\n")  # noqa: E731
    jobs = [Job("b", [write("b1"), write("b2")], after=("a",), prepare=prepared), Job("a", [write("a")])]
    schedule([*jobs, Job("c", [write("c")])], 2, tmp_path / "logs")
    lines = order.read_text().split()
    assert sorted(lines) == ["a", "b1", "b2", "c", "prepare-b"]
    assert lines.index("a") < lines.index("prepare-b") < lines.index("b1") < lines.index("b2")
    assert (tmp_path / "logs" / "b.log").read_text().count("$ ") == 2
    done = tmp_path / "done"
    done.write_text("")
    schedule([Job("skipped", [[py, "-c", "raise SystemExit(3)"]], done=done)], 1, tmp_path / "logs")
    with pytest.raises(RuntimeError, match=r"job bad failed \(exit 3\)"):
        schedule([Job("bad", [[py, "-c", "raise SystemExit(3)"]])], 1, tmp_path / "logs")
