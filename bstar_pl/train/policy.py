"""One iteration's training: the Lightning Trainer and SFTModule, fits of a few steps each with an
atomic checkpoint after each, the HF export, and the hand-off of the new weights to the engine.

Why fits of `checkpoint_every` steps: a fit that ends is a finished epoch, and a finished epoch is the
one checkpoint Lightning resumes exactly (a mid-epoch one would restart the data). Each fit trains a
window of one seeded batch stream, so a run killed and resumed sees the batches an unbroken run sees.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from bstar_pl import dist
from bstar_pl.config import Config
from bstar_pl.dtypes import dtype
from bstar_pl.engine import Engine
from bstar_pl.export import save_hf, weight_buckets
from bstar_pl.modes import MODES
from bstar_pl.records import SFTExample
from bstar_pl.rundir import RunDir
from bstar_pl.train.builders import Optim
from bstar_pl.train.data import SFTDataModule
from bstar_pl.train.sft import SFTModule, checkpoint_step

KEEP = 2  # checkpoints kept per directory: the newest, and one more in case the newest is bad


class PolicyTrainer:
    """The training side of the hybrid process: one per rank, kept across iterations.

    In the continuing modes (B-STaR, Online RFT) the module, its optimizer and its LR schedule live
    on for the whole run, one cosine schedule over iterations × steps; otherwise each iteration starts
    a new module (from the last policy, or from P0 for ReST-EM) with a fresh optimizer and schedule.
    """

    def __init__(self, cfg: Config, rd: RunDir) -> None:
        self.cfg, self.rd = cfg, rd
        self.continuing, self.restarts = MODES[cfg.mode].continuing, MODES[cfg.mode].restarts
        self.module: SFTModule | None = None
        self.trainer: L.Trainer | None = None
        # Read before the engine starts: vLLM's CPU platform overwrites LOCAL_WORLD_SIZE with its TP size.
        self.world, self.per_node = dist.world_size(), dist.local_world_size()
        t = cfg.train
        self.data = SFTDataModule(
            tokenizer=str(cfg.policy),
            micro_batch_size=t.micro_batch_size,
            max_prompt_len=t.max_prompt_len,
            max_target_len=t.max_target_len,
            prompt=cfg.prompt,
        )

    def train(self, iteration: int, examples: list[SFTExample], start: Path) -> int:
        """Train iteration `iteration` (1-based) on `examples`, resuming from its newest checkpoint;
        return the number of tokens this rank trained on in this call (for the throughput figure).

        `start` is the policy the iteration starts from when no module carries over (see class doc).
        """
        steps = self.cfg.train.steps
        base = (iteration - 1) * steps if self.continuing else 0
        goal = base + steps
        folder = self.rd.checkpoints(iteration, self.continuing)
        resume = latest_checkpoint(folder)
        if self.continuing and self.module is not None:
            resume = None  # the module in memory is the newest state
            position = self.trainer.global_step
        else:
            weights = self.cfg.policy if self.continuing or self.restarts else start
            self.module, self.trainer = self._build(weights, iteration)
            position = checkpoint_step(resume) if resume else 0
            if self.continuing and position < base:
                raise RuntimeError(
                    f"{folder}: the newest checkpoint is at step {position}, but iteration {iteration} starts at "
                    f"step {base}; the optimizer state of the earlier iterations is missing"
                )
        seed = self.cfg.seed * 1000 + iteration  # the iteration's batch order
        before = int(self.module.tokens_trained)
        if resume is not None and position >= goal:
            # Killed between the last checkpoint and the export: restore it with a fit that trains nothing.
            self.data.set_examples(examples, steps, window=(steps - 1, steps), seed=seed)
            self.trainer.fit_loop.epoch_loop.max_steps = position
            self.trainer.fit(self.module, datamodule=self.data, ckpt_path=resume)
        every = self.cfg.train.checkpoint_every
        while position < goal:
            stop = min(goal, base + ((position - base) // every + 1) * every)
            self.data.set_examples(examples, steps, window=(position - base, stop - base), seed=seed)
            self.trainer.fit_loop.epoch_loop.max_steps = stop
            self.trainer.fit(self.module, datamodule=self.data, ckpt_path=resume)
            resume = None
            save_checkpoint(self.trainer, folder, stop)
            position = stop
        return int(self.module.tokens_trained) - before

    def export(self, out: Path) -> None:
        """Write the policy as an HF checkpoint: the resume point, and the engine's fallback."""
        save_hf(self.module.model, self.cfg.policy, out, self.export_dtype)

    def swap(self, engine: Engine, source: Path) -> None:
        """Stream the trained weights into the engine in place (all ranks gather in lockstep).

        With sleep mode (GPU) the engine slept through training; its weights wake first, then the new
        ones load, then the KV cache wakes, so new weights never share the device with a KV cache.
        """
        if engine.sleep_mode:
            engine.wake(["weights"])
        buckets = weight_buckets(self.module.model, self.export_dtype or torch.float32)
        engine.load_weights((item for bucket in buckets for item in bucket), source=source)
        if engine.sleep_mode:
            engine.wake(["kv_cache"])

    @property
    def export_dtype(self) -> torch.dtype | None:
        return dtype(self.cfg.train.export_dtype, "train.export_dtype")

    def _build(self, weights: Path, iteration: int) -> tuple[SFTModule, L.Trainer]:
        t = self.cfg.train
        total = t.steps * (self.cfg.iterations if self.continuing else 1)
        module = SFTModule(
            str(weights),
            optim=Optim(t.lr, t.lr_min, t.warmup_steps, total_steps=total, weight_decay=t.weight_decay),
            param_dtype=t.param_dtype,
            activation_checkpointing=t.activation_checkpointing,
            freeze_layers=t.freeze_layers,
        )
        world, per_node = self.world, self.per_node
        strategy = "auto"
        if world > 1:
            from lightning.pytorch.strategies import ModelParallelStrategy

            backend = "nccl" if torch.cuda.is_available() else "gloo"
            strategy = ModelParallelStrategy(world, 1, process_group_backend=backend)
        version = "train" if self.continuing else f"train_iter_{iteration:02d}"
        trainer = L.Trainer(
            accelerator=t.accelerator,
            devices=per_node,
            num_nodes=world // per_node,
            strategy=strategy,
            max_epochs=-1,
            max_steps=0,
            accumulate_grad_batches=t.accumulate,
            gradient_clip_val=t.gradient_clip,
            logger=TensorBoardLogger(self.cfg.out, name="tb", version=version),
            log_every_n_steps=1,
            enable_checkpointing=False,
            enable_model_summary=False,
        )
        return module, trainer


def save_checkpoint(trainer: L.Trainer, folder: Path, step: int) -> Path:
    """Save `step_XXXXXX.ckpt` in `folder` under a temporary name, rename it, and drop old ones."""
    path = folder / f"step_{step:06d}.ckpt"
    tmp = folder / f".{path.name}.tmp"
    if trainer.global_rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        _remove(tmp)
    trainer.strategy.barrier()
    trainer.save_checkpoint(tmp)
    trainer.strategy.barrier()
    if trainer.global_rank == 0:
        _remove(path)
        os.replace(tmp, path)
        for old in sorted(folder.glob("step_*.ckpt"))[:-KEEP]:
            _remove(old)
    trainer.strategy.barrier()
    return path


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in `folder` (temporary names never count)."""
    found = sorted(folder.glob("step_*.ckpt")) if folder.is_dir() else []
    return found[-1] if found else None


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
