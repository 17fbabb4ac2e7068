"""SFTModule: masked-NLL fine-tuning of any Hugging Face causal LM, sharded with FSDP2 under Lightning.

Optimizer and LR schedule live on the module so that successive `fit` calls continue one schedule.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from bstar_pl.dtypes import dtype
from bstar_pl.export import save_hf
from bstar_pl.records import SFTExample
from bstar_pl.train.builders import Optim, adamw_cosine, decoder_layers, fully_shard
from bstar_pl.train.data import IGNORE, SFTDataModule


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL over positions whose label is not -100 (prompt and padding never count)."""
    logits = logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=IGNORE)


class SFTModule(L.LightningModule):
    """Supervised fine-tuning of the causal LM in `model_path` (an HF directory).

    Args:
        model_path: HF checkpoint directory (config, weights, tokenizer).
        optim: AdamW and its warmup-cosine schedule (`train/builders.py`); the loop sets iterations × steps.
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
        optim: Optim = Optim(),
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
            dtype(value, name)  # a bad name fails here, not after the model has loaded
        self.save_hyperparameters()
        # Checkpoints keep plain values (they load with weights_only); under LightningCLI hparams hold the parsed
        # config. Either way the module reads its own `optim`.
        self.hparams["optim"] = dataclasses.asdict(optim)
        self.optim = optim
        self.model: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
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
        layers = decoder_layers(model)
        if hp.freeze_layers:
            if hp.freeze_layers > len(layers):
                raise ValueError(f"freeze_layers is {hp.freeze_layers}, but {hp.model_path} has {len(layers)} layers")
            frozen += [model.get_input_embeddings(), *layers[: hp.freeze_layers]]
        for module in frozen:
            module.requires_grad_(False)
        if hp.activation_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.device_mesh is not None:
            fully_shard(model, self.device_mesh, hp.param_dtype, layers)
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
        return adamw_cosine(self)

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
            export = dtype(self.hparams.export_dtype, "export_dtype")
            save_hf(self.model, self.hparams.model_path, self.hparams.export_dir, export)


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
