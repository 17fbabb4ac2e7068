"""The CPU mini-reproduction of B-STaR, the README's main command: everything offline, in one process.

    base model -> task data -> SFT (P0) -> PRM data (Math-Shepherd) -> PRM
    -> for each seed: B-STaR, Online RFT (t = 1.0, τ = 0.0, same PRM), and a control that spends the same
       training steps on the SFT data -> report

Each phase writes its artefact atomically and is skipped when it exists: re-running resumes. One vLLM
engine serves every phase (a process runs one engine well); its weights change with the policy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from bstar_pl.config import Config, Data, Grid, Reward, Sampling, Search, Selection, TestSet, Train
from bstar_pl.records import Problem, read_jsonl
from bstar_pl.tasks import arithmetic
from bstar_pl.tiny import make_tiny

if TYPE_CHECKING:  # imported late at run time: the CLI sets vLLM's environment first
    import lightning as L

    from bstar_pl.sampler import Sampler

MODES = ("bstar", "online_rft", "control")


def demo(
    out: Path = Path("runs/demo"),
    seeds: int = 1,
    iterations: int = 3,
    modes: tuple[str, ...] = MODES,
    sft_epochs: int = 30,
    prm: bool = True,
    prm_problems: int = 200,
    prm_epochs: int = 3,
    seed: int = 0,
) -> Path:
    """Build the tiny model and the arithmetic data, fine-tune P0, train a PRM on Math-Shepherd labels,
    run each mode for `iterations` iterations per seed, and write the report; return its path."""
    started = time.perf_counter()
    base = out / "base"
    if not (base / "config.json").exists():
        make_tiny(base, seed=seed)
    data = out / "data"
    if not (data / "test.jsonl").exists():
        arithmetic.write_splits(data, seed=seed)
    policy = out / "sft" / "policy"
    if not (policy / "config.json").exists():
        sft(base, data / "sft.jsonl", out / "sft", sft_epochs, seed)
    sampler = engine(policy, seed)
    prm_dir = out / "prm" / "model"
    if prm and not (prm_dir / "config.json").exists():
        train_prm(sampler, policy, data / "dev.jsonl", out / "prm", prm_problems, prm_epochs, seed)

    from bstar_pl.driver import iterate

    runs = []
    for s in range(seed, seed + seeds):
        for mode in modes:
            cfg = run_config(out, mode, s, iterations, prm_dir if prm else None)
            print(f"\n=== {mode}, seed {s} -> {cfg.out}", flush=True)
            iterate(cfg, sampler)
            runs.append(cfg.out)

    from bstar_pl.report import write_report

    path = write_report(runs, out / "report")
    print(f"\ndemo: done in {time.perf_counter() - started:.0f} s; report: {path}")
    return path


def run_config(out: Path, mode: str, seed: int, iterations: int, prm: Path | None) -> Config:
    """The tiny CPU run of `mode` (configs/iterate/tiny.yaml is this config for B-STaR, seed 0)."""
    data = out / "data"
    return Config(
        out=out / "runs" / f"{mode}_seed{seed}",
        policy=out / "sft" / "policy",
        mode=mode,
        iterations=iterations,
        seed=seed,
        data=Data(
            task="arithmetic",
            pool=data / "pool.jsonl",
            pool_size=400,
            search_size=100,
            # Greedy Pass@1 on all 1,000 test problems; Pass@8, Pass@8-4 and Reward@8-4 on the first 200.
            tests={"test": TestSet(data / "test.jsonl"), "test_k8": TestSet(data / "test.jsonl", size=200, k=8)},
            sft=data / "sft.jsonl",
        ),
        search=Search(temperatures=Grid(0.4, 1.2, 0.2), thresholds=Grid(-1.0, 1.0, 0.01), samples=8),
        selection=Selection(n_target=1600, temperature=1.0, threshold=0.0),
        reward=Reward(prm=prm, batch_tokens=8192),
        sampling=Sampling(samples=8, max_new_tokens=96, max_model_len=512, dtype="float32"),
        train=Train(
            steps=60,
            micro_batch_size=32,
            accumulate=1,
            lr=5e-5,
            lr_min=5e-6,
            warmup_steps=5,
            max_prompt_len=64,
            max_target_len=96,
            checkpoint_every=20,
            accelerator="cpu",
        ),
    )


def engine(policy: Path, seed: int) -> Sampler:
    from bstar_pl.sampler import Sampler

    return Sampler(policy, dtype="float32", max_model_len=512, max_new_tokens=96, seed=seed)


def sft(base: Path, train_file: Path, out: Path, epochs: int, seed: int) -> None:
    """Fine-tune `base` on the reference solutions; resumes from `out`'s last checkpoint after a crash."""
    from bstar_pl.data import SFTDataModule
    from bstar_pl.sft import SFTModule

    module = SFTModule(str(base), lr=1e-3, lr_min=1e-5, warmup_steps=20, export_dir=str(out / "policy"))
    data = SFTDataModule(str(train_file), micro_batch_size=32, max_prompt_len=64, max_target_len=96, seed=seed)
    fit_resumable(module, data, out, epochs, seed)


def train_prm(sampler: Sampler, policy: Path, problems_file: Path, out: Path, n: int, epochs: int, seed: int) -> None:
    """Math-Shepherd labels from the SFT policy on `n` problems (disjoint from pool and test), then a PRM
    on the policy's backbone with a new scalar head."""
    from bstar_pl.prm import PRMModule
    from bstar_pl.prm_data import PRMDataModule, write_prm
    from bstar_pl.shepherd import shepherd_examples

    labels = out / "prm_data.jsonl"
    if not labels.exists():
        problems: list[Problem] = read_jsonl(problems_file, Problem)[:n]
        sampler.reload(policy)
        examples = shepherd_examples(sampler, problems, arithmetic.is_correct, solutions=8, completions=4)
        write_prm(labels, examples)
    module = PRMModule(str(policy), lr=3e-4, lr_min=3e-6, warmup_steps=10, export_dir=str(out / "model"))
    data = PRMDataModule(str(labels), micro_batch_size=32, max_prompt_len=64, max_target_len=96, seed=seed)
    fit_resumable(module, data, out, epochs, seed)


def fit_resumable(module: L.LightningModule, data: L.LightningDataModule, out: Path, epochs: int, seed: int) -> None:
    """`epochs` of Lightning training with a checkpoint per epoch; a re-run resumes from the last one."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    L.seed_everything(seed)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        gradient_clip_val=1.0,
        log_every_n_steps=10,
        logger=TensorBoardLogger(out, name="logs"),
        callbacks=[ModelCheckpoint(out / "checkpoints", save_last=True, every_n_epochs=1)],
    )
    last = out / "checkpoints" / "last.ckpt"
    trainer.fit(module, datamodule=data, ckpt_path=last if last.exists() else None)
