"""Training tokens/s of SFTModule through Lightning against a bare PyTorch loop on the same model and batches.

Also prints the padding waste of the length-grouped batches. Runs alternate, medians are reported.
Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sft.py [--steps 40 --repeats 3 --layers 4 --hidden 128]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from transformers import AutoModelForCausalLM, AutoTokenizer

from bstar_pl.models.tiny import Shape, make_tiny
from bstar_pl.tasks import arithmetic
from bstar_pl.train.batches import Padded, StepSampler, padding_waste
from bstar_pl.train.builders import Optim, WarmupCosine
from bstar_pl.train.data import SFTDataModule, encode, padding
from bstar_pl.train.sft import SFTModule, fit_steps, token_loss

HP = {"lr": 1e-3, "lr_min": 1e-5, "warmup_steps": 5, "betas": (0.9, 0.95), "weight_decay": 0.0}
WARMUP_STEPS = 3  # not timed: first-call allocations and kernel selection


class Clock(L.Callback):
    """Wall time from the start of the first timed step to the end of the last one."""

    def __init__(self) -> None:
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: dict, i: int) -> None:
        if trainer.global_step == WARMUP_STEPS and not self.start:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, out: dict, batch: dict, i: int) -> None:
        self.end = time.perf_counter()


def lightning_run(model_dir: Path, examples: list, steps: int, micro: int, logs: Path) -> float:
    """Seconds for the timed steps of `fit_steps` with logging on, as a real run has it."""
    optim = Optim(HP["lr"], HP["lr_min"], HP["warmup_steps"], total_steps=steps, weight_decay=0.0, betas=HP["betas"])
    module = SFTModule(str(model_dir), optim=optim)
    data = SFTDataModule(micro_batch_size=micro, max_prompt_len=128, max_target_len=256)
    clock = Clock()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=-1,
        max_steps=0,
        gradient_clip_val=1.0,
        logger=TensorBoardLogger(logs),
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    fit_steps(trainer, module, data, examples, steps)
    return clock.end - clock.start


def bare_run(model_dir: Path, batches: list[dict[str, torch.Tensor]]) -> float:
    """The same steps written as a plain loop: forward, masked NLL, backward, clip, AdamW, schedule."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=HP["lr"], betas=HP["betas"], weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(HP["warmup_steps"], len(batches), HP["lr_min"] / HP["lr"])
    )
    for step, batch in enumerate(batches):
        if step == WARMUP_STEPS:
            start = time.perf_counter()
        loss = token_loss(model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--micro", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny(Path(tmp) / "model", shape=Shape(layers=args.layers, hidden=args.hidden))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        spec = arithmetic.ArithmeticSpec(min_terms=2, max_terms=6, max_operand=99, operators="+-*")
        examples = arithmetic.sft_examples(arithmetic.generate("train", 4000, spec, seed=0))
        encoded = [encode(tokenizer, e, 128, 256) for e in examples]
        lengths = [len(e.input_ids) for e in encoded]
        # Exactly the batches the data module gives one process (same sampler, seed and epoch 0).
        sampler = StepSampler(lengths, args.micro, 1, 0, 1, args.steps, seed=0, shuffle=True)
        dataset = Padded(encoded, padding(tokenizer.pad_token_id))
        batches = [dataset[b] for b in sampler]
        tokens = sum(int(b["attention_mask"].sum()) for b in batches[WARMUP_STEPS:])

        grouped = [[lengths[i] for i in b] for b in sampler]
        unsorted = [lengths[i : i + args.micro] for i in range(0, args.steps * args.micro, args.micro)]
        per_batch = [padding_waste([b]) for b in grouped]

        params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
        lit, bare = [], []
        for r in range(args.repeats):
            lit.append(tokens / lightning_run(model_dir, examples, args.steps, args.micro, Path(tmp) / f"logs{r}"))
            bare.append(tokens / bare_run(model_dir, batches))
            print(f"repeat {r}: lightning {lit[-1]:,.0f} tok/s, bare loop {bare[-1]:,.0f} tok/s", flush=True)

    print(f"model: {args.layers} layers, hidden {args.hidden} ({params / 1e6:.2f}M params); micro-batch {args.micro}")
    print(f"tokens/s median: lightning {statistics.median(lit):,.0f}, bare loop {statistics.median(bare):,.0f}")
    print(f"ratio lightning / bare (median of {args.repeats}): {statistics.median(lit) / statistics.median(bare):.3f}")
    print(f"padding waste, length-grouped: mean {statistics.mean(per_batch):.1%}, worst batch {max(per_batch):.1%}")
    print(f"padding waste, file order (no grouping): {padding_waste(unsorted):.1%}")


if __name__ == "__main__":
    main()
