"""The loop's trainer (train/policy.py) on its own: one schedule over iterations in the continuing modes, a fresh one
per iteration otherwise, checkpoints every `checkpoint_every` steps, and a trainer rebuilt from its last checkpoint
(a killed run resumed) ending where one that was never interrupted ends."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bstar_pl.config import Config, Train
from bstar_pl.rundir import RunDir
from bstar_pl.tasks import arithmetic
from bstar_pl.train.policy import KEEP, PolicyTrainer, latest_checkpoint

pytestmark = pytest.mark.fit
EXAMPLES = arithmetic.sft_examples(arithmetic.generate("train", 32, seed=0))


def trainer(policy: Path, out: Path, mode: str = "bstar") -> tuple[PolicyTrainer, RunDir]:
    sizes = {"micro_batch_size": 8, "accumulate": 1, "max_prompt_len": 64, "max_target_len": 64}
    train = Train(steps=4, lr=1e-3, lr_min=1e-4, checkpoint_every=2, accelerator="cpu", **sizes)
    cfg = Config(out=out, policy=policy, mode=mode, iterations=2, train=train)
    rd = RunDir(out, policy)
    return PolicyTrainer(cfg, rd), rd


def weights(t: PolicyTrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in t.module.model.state_dict().items()}


def test_continuing_modes_keep_one_schedule_and_checkpoint_as_they_go(tiny_model_dir: Path, tmp_path: Path) -> None:
    t, rd = trainer(tiny_model_dir, tmp_path / "run")
    tokens = t.train(1, EXAMPLES, tiny_model_dir)
    assert tokens > 0 and t.trainer.global_step == 4
    names = sorted(p.name for p in rd.checkpoints(1, continuing=True).glob("step_*.ckpt"))
    assert names == ["step_000002.ckpt", "step_000004.ckpt"][-KEEP:]
    lr_after_one = t.module.scheduler.get_last_lr()[0]
    t.train(2, EXAMPLES, rd.policy(1))
    assert t.trainer.global_step == 8 and t.module.scheduler.get_last_lr()[0] < lr_after_one  # one cosine
    assert latest_checkpoint(rd.checkpoints(2, continuing=True)).name == "step_000008.ckpt"


def test_a_resumed_trainer_ends_where_an_unbroken_one_ends(tiny_model_dir: Path, tmp_path: Path) -> None:
    whole, _ = trainer(tiny_model_dir, tmp_path / "whole")
    whole.train(1, EXAMPLES, tiny_model_dir)
    whole.train(2, EXAMPLES, tiny_model_dir)
    broken, _ = trainer(tiny_model_dir, tmp_path / "broken")
    broken.train(1, EXAMPLES, tiny_model_dir)
    # A new process after a kill between iterations: it rebuilds module, optimizer and schedule from the checkpoint.
    resumed, _ = trainer(tiny_model_dir, tmp_path / "broken")
    resumed.train(2, EXAMPLES, tiny_model_dir)
    expected, found = weights(whole), weights(resumed)
    for name, tensor in expected.items():
        torch.testing.assert_close(found[name], tensor, rtol=0, atol=0, msg=name)


def test_other_modes_start_each_iteration_afresh(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Iterative RFT and ReST-EM train iteration 1 alike; in iteration 2 each starts a new schedule, Iterative RFT from
    P_1 and ReST-EM from P0 again, so on the same data their iteration-2 policies differ."""
    found = {}
    for mode in ("iterative_rft", "rest_em"):
        t, rd = trainer(tiny_model_dir, tmp_path / mode, mode)
        t.train(1, EXAMPLES, tiny_model_dir)
        first = weights(t)
        t.export(rd.policy(1))
        t.train(2, EXAMPLES, rd.policy(1))
        assert t.trainer.global_step == 4  # a new trainer and schedule for iteration 2
        assert latest_checkpoint(rd.checkpoints(2, continuing=False)).name == "step_000004.ckpt"
        found[mode] = (first, weights(t))
    (rft_1, rft_2), (rest_1, rest_2) = found["iterative_rft"], found["rest_em"]
    assert all(torch.equal(rft_1[k], rest_1[k]) for k in rft_1)
    assert any(not torch.equal(rft_2[k], rest_2[k]) for k in rft_2)
