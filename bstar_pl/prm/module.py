"""PRMModule: a process reward model (HF backbone + scalar head, or implicit) trained with pointwise BCE under
Lightning + FSDP2.

Each weighted token's logit is pushed towards its step's label; optimizer and schedule live on the module, as in SFT.
An optional next-token loss through the backbone's frozen LM head keeps a scalar-head PRM's hidden states able to
predict the text (hidden-state regularisation), so fitting the labels does not erase what the backbone knew.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from bstar_pl.dtypes import dtype
from bstar_pl.prm.implicit import ImplicitRewardModel
from bstar_pl.prm.model import REWARDS, RewardModel, load_reward_model, save_reward_model
from bstar_pl.train.builders import Optim, adamw_cosine, decoder_layers, fully_shard


def step_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean BCE-with-logits over tokens; no shift: the logit at a token judges the text up to it."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    return (bce * weights).sum() / weights.sum().clamp_min(1.0)


def next_token_loss(vocab_logits: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each token after the first, weighted by its step label.

    Only tokens of steps that can still reach the answer count (a soft label weights its tokens), so the backbone
    is not taught to repeat wrong steps; prompt, EOS and padding have label 0.
    """
    ce = F.cross_entropy(vocab_logits[:, :-1].flatten(0, 1), input_ids[:, 1:].flatten(), reduction="none")
    weights = labels[:, 1:].flatten().float()
    return (ce * weights).sum() / weights.sum().clamp_min(1.0)


class PRMModule(L.LightningModule):
    """Train the PRM in `model_path`: a causal LM directory (a new PRM starts from it) or a PRM directory.

    Args:
        model_path: HF causal LM directory (e.g. the SFT policy, or a base model) or a saved PRM directory.
        optim: AdamW and its warmup-cosine schedule (`train/builders.py`; the paper: 2e-6 -> 2e-7).
        activation_checkpointing: recompute each decoder layer in the backward pass.
        param_dtype: FSDP2 compute dtype ("bfloat16" on GPU); master weights and reduction stay float32.
        export_dir: when set, write the PRM directory there at the end of every fit.
        export_dtype: dtype of that directory's backbone and reference (a head stays float32); None: float32.
        reward: the kind of PRM a causal LM starts: "head" (a scalar head, the paper's) or "implicit" (the LM
            scored against a frozen copy of itself, `prm/implicit.py`); a PRM directory must hold this kind.
        beta: the implicit PRM's scale (logit = beta x log-likelihood ratio); a PRM directory keeps its own.
        lm_weight: weight of the next-token loss on correct steps through the backbone's frozen LM head (0: off).
            Needs a causal LM `model_path` and reward "head"; the LM head is not exported.
    """

    def __init__(
        self,
        model_path: str,
        optim: Optim = Optim(lr=2e-6),
        activation_checkpointing: bool = False,
        param_dtype: str | None = None,
        export_dir: str | None = None,
        export_dtype: str | None = None,
        reward: str = "head",
        beta: float = 0.05,
        lm_weight: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (("param_dtype", param_dtype), ("export_dtype", export_dtype)):
            dtype(value, name)  # a bad name fails here, not after the model has loaded
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if lm_weight < 0 or (lm_weight > 0 and reward != "head"):
            raise ValueError(f"lm_weight must be >= 0, and 0 unless reward is 'head'; got {lm_weight} ({reward})")
        self.save_hyperparameters()
        # Checkpoints keep plain values (they load with weights_only); under LightningCLI hparams hold the parsed
        # config. Either way the module reads its own `optim`.
        self.hparams["optim"] = dataclasses.asdict(optim)
        self.optim = optim
        self.model: RewardModel | ImplicitRewardModel | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None

    def configure_model(self) -> None:
        """Load the PRM and shard it: `fully_shard` each decoder layer, the frozen parts, then the whole model."""
        if self.model is not None:
            return
        hp = self.hparams
        model = load_reward_model(
            hp.model_path, dtype=torch.float32, lm_head=hp.lm_weight > 0, reward=hp.reward, beta=hp.beta
        )
        model.train()
        if hp.activation_checkpointing:
            model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.device_mesh is not None:
            frozen = model.reference if isinstance(model, ImplicitRewardModel) else model.lm_head  # None: no LM head
            units = [*decoder_layers(model.backbone, model), *([frozen] if frozen is not None else [])]
            fully_shard(model, self.device_mesh, hp.param_dtype, units)
        self.model = model

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        ids, labels, weights = batch["input_ids"], batch["labels"], batch["weights"]
        if self.hparams.lm_weight:
            logits, vocab = self.model(ids, batch["attention_mask"], next_token_logits=True)
            loss, lm_loss = step_loss(logits, labels, weights), next_token_loss(vocab, ids, labels)
            self.log_dict({"train/step_loss": loss, "train/lm_loss": lm_loss})
            loss = loss + self.hparams.lm_weight * lm_loss
        else:
            logits = self.model(ids, batch["attention_mask"])
            loss = step_loss(logits, labels, weights)
        with torch.no_grad():
            hit = ((logits > 0) == (labels > 0.5)).float()
            accuracy = (hit * weights).sum() / weights.sum().clamp_min(1.0)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/accuracy", accuracy, prog_bar=True)
        self.log("train/lr", self.scheduler.get_last_lr()[0])
        self.log("train/tokens", batch["attention_mask"].sum().float(), reduce_fx="sum")
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_cosine(self)

    def on_train_end(self) -> None:
        if self.hparams.export_dir:
            export = dtype(self.hparams.export_dtype, "export_dtype")
            save_reward_model(self.model, self.hparams.model_path, self.hparams.export_dir, export)
