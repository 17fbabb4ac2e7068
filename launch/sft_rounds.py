"""Train k optimizer steps on each data file in turn, one process per rank: the training half of the B-STaR loop.

Each round continues weights, optimizer and LR schedule, saves a Lightning checkpoint and an HF policy.
Usage: torchrun --nproc_per_node=2 launch/sft_rounds.py --model DIR --data a.jsonl b.jsonl --steps 3 --out OUT --cpu
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from safetensors.torch import load_file

from bstar_pl.export import save_hf, weight_buckets
from bstar_pl.train.builders import Optim
from bstar_pl.train.data import SFTDataModule, load_examples
from bstar_pl.train.sft import SFTModule, fit_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="HF model directory to start from")
    parser.add_argument("--data", nargs="+", required=True, help="one {query, output} file per round")
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps per round")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resume", help="checkpoint of an earlier round to continue from")
    parser.add_argument("--total_steps", type=int, help="schedule length (default: steps x rounds)")
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--cpu", action="store_true", help="gloo on CPU instead of NCCL on GPUs")
    parser.add_argument("--check_stream", action="store_true", help="assert streamed buckets == the HF export")
    args = parser.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    strategy = (
        ModelParallelStrategy(world, 1, process_group_backend="gloo" if args.cpu else None) if world > 1 else "auto"
    )
    L.seed_everything(0)
    total = args.total_steps or args.steps * len(args.data)
    module = SFTModule(args.model, optim=Optim(lr=args.lr, lr_min=args.lr / 100, warmup_steps=2, total_steps=total))
    trainer = L.Trainer(
        accelerator="cpu" if args.cpu else "gpu",
        devices=world,
        strategy=strategy,
        max_epochs=-1,
        max_steps=0,
        accumulate_grad_batches=args.accumulate,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = SFTDataModule(micro_batch_size=args.micro, max_prompt_len=64, max_target_len=96)
    ckpt = args.resume
    for i, path in enumerate(args.data):
        fit_steps(trainer, module, data, load_examples(path), args.steps, ckpt_path=ckpt)
        ckpt = None  # restored once; later rounds continue in process
        step = args.out / f"step_{trainer.global_step:05d}"
        trainer.save_checkpoint(step / "last.ckpt")
        policy = save_hf(module.model, args.model, step / "policy")
        if args.check_stream:
            # All ranks gather every bucket in the same order; only rank 0 compares.
            streamed = {
                name: t for bucket in weight_buckets(module.model, torch.float32, 1 << 20) for name, t in bucket
            }
            if trainer.global_rank == 0:
                saved = load_file(policy / "model.safetensors")
                assert all(torch.equal(streamed[n], t) for n, t in saved.items()), "streamed weights != export"
        if trainer.global_rank == 0:
            print(f"round {i}: step {trainer.global_step}, lr {module.scheduler.get_last_lr()[0]:.3e} -> {step}")


if __name__ == "__main__":
    main()
