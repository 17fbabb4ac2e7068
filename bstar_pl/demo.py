"""The tiny end-to-end run on CPU: build a model and data offline, fine-tune, sample with vLLM, grade.

Each phase writes one artefact atomically and is skipped when it exists: re-running resumes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bstar_pl.atomic import atomic_write_text
from bstar_pl.evaluate import format_table, sample_metrics
from bstar_pl.records import Problem, Sample, read_jsonl, write_jsonl
from bstar_pl.tasks import arithmetic
from bstar_pl.tiny import make_tiny


def demo(
    out: Path = Path("runs/demo"),
    sft_epochs: int = 15,
    temperatures: tuple[float, ...] = (0.4, 0.8, 1.2),
    samples_per_problem: int = 8,
    problems: int = 200,
    max_new_tokens: int = 96,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Make a tiny Llama and the arithmetic data, fine-tune it (SFT), then sample `problems` pool
    problems at each temperature and the test problems greedily; print and return the metrics."""
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

    pool = read_jsonl(data / "pool.jsonl", Problem)[:problems]
    test = read_jsonl(data / "test.jsonl", Problem)[:problems]
    samples_path, greedy_path = out / "samples.jsonl", out / "test_greedy.jsonl"
    if not (samples_path.exists() and greedy_path.exists()):
        from bstar_pl.sampler import Sampler

        sampler = Sampler(policy, dtype="float32", max_model_len=512, max_new_tokens=max_new_tokens, seed=seed)
        write_jsonl(samples_path, sampler.generate(pool, temperatures, samples_per_problem))
        write_jsonl(greedy_path, sampler.generate(test, [0.0], 1))

    table = sample_metrics(pool, read_jsonl(samples_path, Sample), arithmetic.is_correct, arithmetic.check_steps)
    greedy = sample_metrics(test, read_jsonl(greedy_path, Sample), arithmetic.is_correct, arithmetic.check_steps)
    metrics = {"test_greedy": greedy["0.00"], "pool_sampled": table}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    print(f"\nPool, {samples_per_problem} samples per problem:\n{format_table(table)}")
    print(f"\nTest, greedy: {format_table(greedy)}")
    print(f"\ndemo: done in {time.perf_counter() - started:.0f} s; artefacts and TensorBoard logs in {out}")
    return metrics


def sft(base: Path, train_file: Path, out: Path, epochs: int, seed: int) -> None:
    """Fine-tune `base` on the reference solutions; resumes from `out`'s last checkpoint after a crash."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from bstar_pl.data import SFTDataModule
    from bstar_pl.sft import SFTModule

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
    module = SFTModule(str(base), lr=1e-3, lr_min=1e-5, warmup_steps=20, export_dir=str(out / "policy"))
    data = SFTDataModule(str(train_file), micro_batch_size=32, max_prompt_len=64, max_target_len=96, seed=seed)
    last = out / "checkpoints" / "last.ckpt"
    trainer.fit(module, datamodule=data, ckpt_path=last if last.exists() else None)
