"""PRMModule: a process reward model (HF backbone + scalar head, or implicit) trained with pointwise BCE under
Lightning + FSDP2.

Each weighted token's logit is pushed towards its step's label; optimizer and schedule live on the module, as in SFT.
An optional next-token loss through the backbone's frozen LM head keeps a scalar-head PRM's hidden states able to
predict the text (hidden-state regularisation), so fitting the labels does not erase what the backbone knew.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR

from bstar_pl.implicit_prm import ImplicitRewardModel
from bstar_pl.prm_model import REWARDS, RewardModel, load_reward_model, save_reward_model
from bstar_pl.sft import DTYPES, WarmupCosine


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
        lr / lr_min: peak LR and the floor the cosine decays to (paper: 2e-6 -> 2e-7).
        warmup_steps / warmup_ratio: linear warmup in steps, or as a fraction of `total_steps` (the larger wins).
        total_steps: cosine length in optimizer steps; None: the fit's `trainer.estimated_stepping_batches`.
        weight_decay, betas: AdamW settings.
        activation_checkpointing: recompute each decoder layer in the backward pass.
        param_dtype: FSDP2 compute dtype ("bfloat16" on GPU); master weights and reduction stay float32.
        export_dir: when set, write the PRM directory there at the end of every fit.
        export_dtype: dtype of that directory's backbone and reference (a head stays float32); None: float32.
        reward: the kind of PRM a causal LM starts: "head" (a scalar head, the paper's) or "implicit" (the LM
            scored against a frozen copy of itself, `implicit_prm.py`); a PRM directory must hold this kind.
        beta: the implicit PRM's scale (logit = beta x log-likelihood ratio); a PRM directory keeps its own.
        lm_weight: weight of the next-token loss on correct steps through the backbone's frozen LM head (0: off).
            Needs a causal LM `model_path` and reward "head"; the LM head is not exported.
    """

    def __init__(
        self,
        model_path: str,
        lr: float = 2e-6,
        lr_min: float = 2e-7,
        warmup_steps: int = 0,
        warmup_ratio: float = 0.0,
        total_steps: int | None = None,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.95),
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
            if value is not None and value not in DTYPES:
                raise ValueError(f"{name} must be one of {sorted(DTYPES)}, got {value!r}")
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if lm_weight < 0 or (lm_weight > 0 and reward != "head"):
            raise ValueError(f"lm_weight must be >= 0, and 0 unless reward is 'head'; got {lm_weight} ({reward})")
        self.save_hyperparameters()
        self.model: RewardModel | ImplicitRewardModel | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: LambdaLR | None = None

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
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mesh = self.device_mesh["data_parallel"]
            dtype = DTYPES[hp.param_dtype] if hp.param_dtype else None
            policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
            layer_types = set(model.backbone._no_split_modules or [])
            for module in model.modules():
                if type(module).__name__ in layer_types:
                    fully_shard(module, mesh=mesh, mp_policy=policy)
            for frozen in (getattr(model, "lm_head", None), getattr(model, "reference", None)):
                if frozen is not None:
                    fully_shard(frozen, mesh=mesh, mp_policy=policy)
            fully_shard(model, mesh=mesh, mp_policy=policy)
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
        """AdamW + warmup-cosine, created once so that later fits continue the same state (as SFTModule)."""
        if self.optimizer is None:
            hp = self.hparams
            total = hp.total_steps or int(self.trainer.estimated_stepping_batches)
            warmup = max(hp.warmup_steps, int(hp.warmup_ratio * total))
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(params, lr=hp.lr, betas=hp.betas, weight_decay=hp.weight_decay)
            self.scheduler = LambdaLR(self.optimizer, WarmupCosine(warmup, total, hp.lr_min / hp.lr))
        return {"optimizer": self.optimizer, "lr_scheduler": {"scheduler": self.scheduler, "interval": "step"}}

    def on_train_end(self) -> None:
        if self.hparams.export_dir:
            dtype = DTYPES[self.hparams.export_dtype] if self.hparams.export_dtype else None
            save_reward_model(self.model, self.hparams.model_path, self.hparams.export_dir, dtype)
