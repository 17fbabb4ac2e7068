"""The process reward model, one logit per token: the base model of any HF causal LM plus a linear head (reward
"head", the paper's), or the implicit PRM of `prm/implicit.py` (reward "implicit").

It saves as one directory: the backbone's HF checkpoint and tokenizer, `prm.json` (the kind), and
`prm_head.safetensors` (head) or the frozen reference LM in `reference/` (implicit). A plain causal-LM directory
loads too (a new head is initialised, or the LM is copied as its own reference): that is how a PRM starts from a
policy or base model. A head PRM drops the LM head, or keeps it frozen for an auxiliary next-token loss during
training; it is never saved, since scoring does not use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from bstar_pl.atomic import atomic_path
from bstar_pl.dist import barrier, rank
from bstar_pl.export import full_state, write_hf
from bstar_pl.prm.implicit import ImplicitRewardModel

HEAD_FILE = "prm_head.safetensors"
REFERENCE_DIR = "reference"
REWARDS = ("head", "implicit")
MARKER = "prm.json"
FORMAT = "bstar_pl.prm.module/1"


class RewardModel(torch.nn.Module):
    """Backbone hidden states -> a scalar head -> one float32 logit per token (sigmoid: the step score).

    `lm_head`, when given, is the backbone's own frozen LM head: `forward(..., next_token_logits=True)` also
    returns its vocabulary logits, for a loss that keeps the backbone's hidden states able to predict the text.
    """

    def __init__(
        self, backbone: torch.nn.Module, head: torch.nn.Linear, lm_head: torch.nn.Linear | None = None
    ) -> None:
        super().__init__()
        self.backbone, self.head, self.lm_head = backbone, head, lm_head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, next_token_logits: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        reward = self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float()
        if not next_token_logits:
            return reward
        if self.lm_head is None:
            raise ValueError("this RewardModel has no LM head: load it with lm_head=True from a causal LM directory")
        return reward, self.lm_head(hidden.to(self.lm_head.weight.dtype)).float()


def is_prm_dir(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / MARKER).is_file()


def read_marker(path: Path) -> dict:
    """`prm.json` of a PRM directory; a directory written before `reward` existed holds a scalar-head PRM."""
    marker = json.loads((path / MARKER).read_text())
    if marker.get("format") != FORMAT:
        raise ValueError(f"{path / MARKER}: unknown PRM format {marker.get('format')!r}, expected {FORMAT!r}")
    if marker.setdefault("reward", "head") not in REWARDS:
        raise ValueError(f"{path / MARKER}: reward must be one of {REWARDS}, got {marker['reward']!r}")
    return marker


def load_reward_model(
    path: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
    head_dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    lm_head: bool = False,
    reward: str | None = None,
    beta: float = 0.05,
) -> RewardModel | ImplicitRewardModel:
    """A PRM directory as saved, or a new PRM started from a causal LM directory.

    `reward` is the kind of PRM: "head" (a new scalar head: normal, std = the config's initializer_range) or
    "implicit" (the LM against a frozen copy of itself, `beta` its scale); None: whatever a PRM directory holds,
    "head" for a causal LM. A PRM directory keeps its own beta. `head_dtype` (default: `dtype`) lets a bf16 backbone
    keep a float32 head for scoring. `lm_head` keeps a frozen copy of a causal LM's output layer next to a new
    scalar head (a copy, so that tied input embeddings still train).
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a model directory (no config.json)")
    marker = read_marker(path) if is_prm_dir(path) else None
    kind = marker["reward"] if marker else reward or "head"
    if reward is not None and reward != kind:
        raise ValueError(f"{path}: holds a {kind!r} PRM, not {reward!r}")
    if kind not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {kind!r}")
    if lm_head and (marker or kind != "head"):
        raise ValueError(f"{path}: lm_head needs a causal LM directory and reward 'head' (a PRM directory has none)")
    if kind == "implicit":
        backbone = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        reference = AutoModelForCausalLM.from_pretrained(path / REFERENCE_DIR if marker else path, dtype=dtype)
        return ImplicitRewardModel(backbone, reference, marker["beta"] if marker else beta).to(device)
    lm = None
    if lm_head:
        causal = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        backbone, output = causal.base_model, causal.get_output_embeddings()
        lm = torch.nn.Linear(output.in_features, output.out_features, bias=output.bias is not None, dtype=dtype)
        lm.load_state_dict({k: v.detach().clone() for k, v in output.state_dict().items()})
        lm.requires_grad_(False)
    else:
        backbone = AutoModel.from_pretrained(path, dtype=dtype)
    config = backbone.config
    head = torch.nn.Linear(config.hidden_size, 1, dtype=head_dtype or dtype)
    if marker:
        head.load_state_dict({k: v.to(head.weight.dtype) for k, v in load_file(path / HEAD_FILE).items()})
    else:
        with torch.no_grad():
            head.weight.normal_(0.0, config.initializer_range)
            head.bias.zero_()
    return RewardModel(backbone, head, lm).to(device)


def save_reward_model(
    model: RewardModel | ImplicitRewardModel,
    tokenizer_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a (possibly FSDP2-sharded) PRM to `out` as a PRM directory, atomically, from rank 0.

    Every rank must call this: gathering the full weights is a collective. `dtype` casts the backbone's (and the
    reference's) weights, e.g. bf16 on GPU; a scalar head is stored in float32. An LM head kept for `lm_weight`
    is not saved.
    """
    out = Path(out)
    state = full_state(model)
    if rank() == 0:
        with atomic_path(out, directory=True) as tmp:
            write_hf(model.backbone, part(state, "backbone."), tmp, dtype)
            AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(tmp)
            if isinstance(model, ImplicitRewardModel):
                write_hf(model.reference, part(state, "reference."), tmp / REFERENCE_DIR, dtype)
                marker = {"format": FORMAT, "reward": "implicit", "beta": model.beta}
            else:
                head = {
                    k.removeprefix("head."): v.float().contiguous() for k, v in state.items() if k.startswith("head.")
                }
                save_file(head, str(tmp / HEAD_FILE))
                marker = {"format": FORMAT, "reward": "head", "head": HEAD_FILE}
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    barrier()
    return out


def part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a full state dict under `prefix`, the prefix removed: one HF model of a PRM."""
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
