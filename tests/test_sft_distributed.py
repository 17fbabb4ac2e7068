"""SFT over two gloo processes (FSDP2 under ModelParallelStrategy) against one process: fit, resume, export."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from bstar_pl.records import write_jsonl
from bstar_pl.tasks import arithmetic

pytestmark = pytest.mark.fit

SPEC = arithmetic.ArithmeticSpec(max_terms=3)
ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path) -> None:
    run([str(Path(sys.executable).with_name("bstar-pl")), "sft", "fit", *args], cwd)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_fit_resume_and_export_like_one(tiny_model_dir: Path, tmp_path: Path, two_ranks: list[str]) -> None:
    """FSDP2 over 2 gloo ranks: 3 steps, save, resume for 3 more, export == 1 process accumulating 2."""
    write_jsonl(tmp_path / "sft.jsonl", arithmetic.sft_examples(arithmetic.generate("train", 200, SPEC, seed=0)))
    config = ROOT / "configs" / "sft" / "tiny.yaml"
    common = [
        f"--config={config}",
        f"--model.model_path={tiny_model_dir}",
        f"--data.train_file={tmp_path / 'sft.jsonl'}",
        "--data.micro_batch_size=8",
        "--data.steps=3",
        "--model.optim.total_steps=6",
        "--model.optim.warmup_steps=2",
        "--trainer.enable_progress_bar=false",
        "--seed_everything=0",
    ]
    two = [*common, *two_ranks, f"--trainer.logger.save_dir={tmp_path / 'two'}"]
    cli(*two, "--trainer.max_epochs=1", f"--model.export_dir={tmp_path / 'two_first'}", cwd=tmp_path)
    (ckpt,) = (tmp_path / "two").glob("lightning_logs/version_0/checkpoints/*.ckpt")
    assert ckpt.is_dir()  # sharded: one file per rank plus metadata
    cli(
        *two,
        "--trainer.max_epochs=2",
        f"--model.export_dir={tmp_path / 'two_policy'}",
        f"--ckpt_path={ckpt}",
        cwd=tmp_path,
    )
    one = [*common, "--trainer.accumulate_grad_batches=2", f"--trainer.logger.save_dir={tmp_path / 'one'}"]
    cli(*one, "--trainer.max_epochs=2", f"--model.export_dir={tmp_path / 'one_policy'}", cwd=tmp_path)

    start = load_file(tiny_model_dir / "model.safetensors")
    first = load_file(tmp_path / "two_first" / "model.safetensors")
    two_w = load_file(tmp_path / "two_policy" / "model.safetensors")
    one_w = load_file(tmp_path / "one_policy" / "model.safetensors")
    assert set(two_w) == set(one_w) == set(start)
    for name in start:
        torch.testing.assert_close(two_w[name], one_w[name], rtol=1e-4, atol=1e-5, msg=name)
    worst = max(float((two_w[n] - one_w[n]).abs().max()) for n in start)
    moved = min(float((two_w[n] - first[n]).abs().max()) for n in start if "norm" not in n)
    print(f"2 ranks vs 1 process: max |diff| {worst:.2e}; smallest move in the resumed fit {moved:.2e}")
    assert moved > 100 * worst
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "two_policy")
    assert model.config.num_hidden_layers == 4


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_continue_across_rounds_like_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The loop's path under torchrun: 2 ranks fit k steps on A, save a sharded checkpoint, a new job
    resumes it for k steps on B, streaming weight buckets in lockstep; == 1 process in one go."""
    for name, seed in (("a", 0), ("b", 1)):
        write_jsonl(tmp_path / f"{name}.jsonl", arithmetic.sft_examples(arithmetic.generate("train", 64, SPEC, seed)))
    rounds = ROOT / "launch" / "sft_rounds.py"
    common = ["--model", str(tiny_model_dir), "--steps", "3", "--total_steps", "6", "--cpu"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(rounds)]
    two = [*common, "--out", str(tmp_path / "two"), "--check_stream"]
    run([*torchrun, *two, "--data", str(tmp_path / "a.jsonl")], tmp_path)
    resume = ["--resume", str(tmp_path / "two" / "step_00003" / "last.ckpt")]
    run([*torchrun, *two, "--data", str(tmp_path / "b.jsonl"), *resume], tmp_path)
    one = [*common, "--out", str(tmp_path / "one"), "--accumulate", "2"]
    run([sys.executable, str(rounds), *one, "--data", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], tmp_path)

    two_w = load_file(tmp_path / "two" / "step_00006" / "policy" / "model.safetensors")
    one_w = load_file(tmp_path / "one" / "step_00006" / "policy" / "model.safetensors")
    mid = load_file(tmp_path / "one" / "step_00003" / "policy" / "model.safetensors")
    for name in one_w:
        torch.testing.assert_close(two_w[name], one_w[name], rtol=1e-4, atol=1e-5, msg=name)
    worst = max(float((two_w[n] - one_w[n]).abs().max()) for n in one_w)
    moved = min(float((one_w[n] - mid[n]).abs().max()) for n in one_w if "norm" not in n)
    print(f"rounds: 2 ranks vs 1 process max |diff| {worst:.2e}; smallest move in round 2 {moved:.2e}")
    assert moved > 100 * worst


def run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
