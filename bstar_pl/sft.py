"""SFTModule: masked-NLL fine-tuning of any Hugging Face causal LM, sharded with FSDP2 under Lightning.

Optimizer and LR schedule live on the module so that successive `fit` calls continue one schedule.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR
from transformers import AutoModelForCausalLM

from bstar_pl.data import IGNORE, SFTDataModule
from bstar_pl.export import save_hf
from bstar_pl.records import SFTExample

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL over positions whose label is not -100 (prompt and padding never count)."""
    logits = logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=IGNORE)


class WarmupCosine:
    """LR factor: linear warmup over `warmup` steps, then cosine from 1 to `floor` at `total` steps.

    A class (not a lambda) so the scheduler's state dict, and with it a checkpoint, can hold it.
    """

    def __init__(self, warmup: int, total: int, floor: float) -> None:
        self.warmup, self.total, self.floor = warmup, total, floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min((step - self.warmup) / max(1, self.total - self.warmup), 1.0)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


class SFTModule(L.LightningModule):
    """Supervised fine-tuning of the causal LM in `model_path` (an HF directory).

    Args:
        model_path: HF checkpoint directory (config, weights, tokenizer).
        lr / lr_min: peak LR and the floor the cosine decays to.
        warmup_steps / warmup_ratio: linear warmup length in steps, or as a fraction of `total_steps`
            (the larger wins).
        total_steps: length of the cosine schedule in optimizer steps. None: the first fit's
            `trainer.estimated_stepping_batches`. The self-improvement loop sets iterations × steps.
        weight_decay, betas: AdamW settings (the paper: weight decay 0).
        activation_checkpointing: recompute each decoder layer in the backward pass (saves memory).
        param_dtype: FSDP2 compute dtype, e.g. "bfloat16" on GPU; master weights, optimizer state and
            gradient reduction stay float32. None: compute in float32 (CPU).
        freeze_embeddings / freeze_norms / freeze_lm_head: keep these weights fixed, as the
            reference code does for its policy (default off: everything trains).
        freeze_layers: keep the input embeddings and the first this many decoder layers fixed. The backward
            pass then stops at the first trained layer, which is what makes a 135M model trainable on a
            CPU core in minutes (0: everything trains).
        export_dir: when set, write an HF checkpoint there at the end of every fit.
        export_dtype: dtype of that checkpoint ("bfloat16" on GPU, so vLLM serves it in bf16);
            None: the training dtype (float32).
    """

    def __init__(
        self,
        model_path: str,
        lr: float = 5e-6,
        lr_min: float = 2e-7,
        warmup_steps: int = 0,
        warmup_ratio: float = 0.0,
        total_steps: int | None = None,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.95),
        activation_checkpointing: bool = False,
        param_dtype: str | None = None,
        freeze_embeddings: bool = False,
        freeze_norms: bool = False,
        freeze_lm_head: bool = False,
        freeze_layers: int = 0,
        export_dir: str | None = None,
        export_dtype: str | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("param_dtype", param_dtype), ("export_dtype", export_dtype)):
            if value is not None and value not in DTYPES:
                raise ValueError(f"{name} must be one of {sorted(DTYPES)}, got {value!r}")
        self.save_hyperparameters()
        self.model: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: LambdaLR | None = None
        # This rank's non-padding tokens trained on so far (a tensor: reading it per step would sync the GPU).
        self.tokens_trained: torch.Tensor | int = 0

    def configure_model(self) -> None:
        """Load the weights and shard them: `fully_shard` each decoder layer, then the root.

        Lightning calls this on every fit; the model is built once and kept.
        """
        if self.model is not None:
            return
        hp = self.hparams
        model = AutoModelForCausalLM.from_pretrained(hp.model_path, dtype=torch.float32)
        model.train()  # from_pretrained returns eval mode
        frozen = []
        if hp.freeze_embeddings:
            frozen.append(model.get_input_embeddings())
        if hp.freeze_lm_head:
            frozen.append(model.get_output_embeddings())
        if hp.freeze_norms:
            frozen += [m for m in model.modules() if type(m).__name__.lower().endswith("norm")]
        # Decoder layer classes are what HF names as never to be split across devices.
        layer_types = set(model._no_split_modules or [])
        layers = [m for m in model.modules() if type(m).__name__ in layer_types]
        if hp.freeze_layers:
            if hp.freeze_layers > len(layers):
                raise ValueError(f"freeze_layers is {hp.freeze_layers}, but {hp.model_path} has {len(layers)} layers")
            frozen += [model.get_input_embeddings(), *layers[: hp.freeze_layers]]
        for module in frozen:
            module.requires_grad_(False)
        if hp.activation_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.device_mesh is not None:
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mesh = self.device_mesh["data_parallel"]
            dtype = DTYPES[hp.param_dtype] if hp.param_dtype else None
            policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
            for module in layers:
                fully_shard(module, mesh=mesh, mp_policy=policy)
            fully_shard(model, mesh=mesh, mp_policy=policy)
        self.model = model

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = token_loss(out.logits, batch["labels"])
        mask = batch["attention_mask"]
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.scheduler.get_last_lr()[0], prog_bar=True)
        self.log("train/padding", 1 - mask.float().mean())
        self.log("train/tokens", mask.sum().float(), reduce_fx="sum")
        self.tokens_trained = self.tokens_trained + mask.sum().detach()
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW + warmup-cosine, created once: later fits get the same objects, so optimizer state and
        schedule position carry over (Lightning calls this on every fit)."""
        if self.optimizer is None:
            hp = self.hparams
            total = hp.total_steps or int(self.trainer.estimated_stepping_batches)
            warmup = max(hp.warmup_steps, int(hp.warmup_ratio * total))
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(params, lr=hp.lr, betas=hp.betas, weight_decay=hp.weight_decay)
            self.scheduler = LambdaLR(self.optimizer, WarmupCosine(warmup, total, hp.lr_min / hp.lr))
        return {"optimizer": self.optimizer, "lr_scheduler": {"scheduler": self.scheduler, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume a checkpoint saved after a fit (`trainer.save_checkpoint`) at a fresh epoch.

        Such a checkpoint holds a finished epoch whose batch counters are still set; Lightning would
        take them for a half-done epoch and start the next fit's data at batch k, skipping batches.
        Zeroing them makes the next fit start at batch 0, exactly as continuing in process does.
        Checkpoints saved inside an epoch (epoch not yet completed) are left alone.
        """
        loop = checkpoint["loops"]["fit_loop"]
        epochs = loop["epoch_progress"]["current"]
        if epochs["completed"] != epochs["ready"]:
            return
        for key in ("epoch_loop.batch_progress", "epoch_loop.scheduler_progress"):
            loop[key]["current"] = dict.fromkeys(loop[key]["current"], 0)
        loop["epoch_loop.batch_progress"]["is_last_batch"] = False

    def on_train_end(self) -> None:
        if self.hparams.export_dir:
            dtype = DTYPES[self.hparams.export_dtype] if self.hparams.export_dtype else None
            save_hf(self.model, self.hparams.model_path, self.hparams.export_dir, dtype)


def fit_steps(
    trainer: L.Trainer,
    module: SFTModule,
    data: SFTDataModule,
    examples: list[SFTExample],
    steps: int,
    ckpt_path: str | os.PathLike[str] | None = None,
) -> None:
    """Train `steps` more optimizer steps on `examples`, continuing weights, optimizer and schedule.

    Continue in process with the trainer and module of the earlier fits, or in a new process with new
    ones and `ckpt_path` (a checkpoint saved after a fit, e.g. `trainer.save_checkpoint`). The trainer
    needs `max_epochs=-1`. The new data starts at its first batch; one fit is one epoch of it.
    """
    data.set_examples(examples, steps)
    done = checkpoint_step(ckpt_path) if ckpt_path is not None else trainer.global_step
    trainer.fit_loop.epoch_loop.max_steps = done + steps
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)


def checkpoint_step(path: str | os.PathLike[str]) -> int:
    """The global step stored in a Lightning checkpoint: a file, or a sharded directory's `meta.pt`."""
    path = Path(path)
    meta = path / "meta.pt" if path.is_dir() else path
    # mmap: a full single-file checkpoint is not read into memory just for one number.
    return int(torch.load(meta, map_location="cpu", mmap=True, weights_only=False)["global_step"])
