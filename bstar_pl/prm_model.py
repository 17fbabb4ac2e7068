"""The process reward model: the base model of any HF causal LM plus a linear head, one logit per token.

It saves as one directory: the backbone's HF checkpoint and tokenizer, `prm_head.safetensors` and `prm.json`.
A plain causal-LM directory loads too (a new scalar head is initialised): that is how a PRM starts from a policy
or base model. Its LM head is dropped, or kept frozen for an auxiliary next-token loss during training; it is
never saved, since scoring does not use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from bstar_pl.atomic import atomic_path

HEAD_FILE = "prm_head.safetensors"
MARKER = "prm.json"
FORMAT = "bstar_pl.prm/1"


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


def load_reward_model(
    path: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
    head_dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    lm_head: bool = False,
) -> RewardModel:
    """A PRM directory, or a causal LM directory with a new head (normal, std = the config's initializer_range).

    `head_dtype` (default: `dtype`) lets a bf16 backbone keep a float32 head for scoring. `lm_head` keeps a frozen
    copy of a causal LM's output layer (a copy, so that tied input embeddings still train); a PRM directory has
    none to keep.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a model directory (no config.json)")
    lm = None
    if lm_head:
        if is_prm_dir(path):
            raise ValueError(f"{path}: a PRM directory has no LM head; start from a causal LM directory")
        causal = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        backbone, output = causal.base_model, causal.get_output_embeddings()
        lm = torch.nn.Linear(output.in_features, output.out_features, bias=output.bias is not None, dtype=dtype)
        lm.load_state_dict({k: v.detach().clone() for k, v in output.state_dict().items()})
        lm.requires_grad_(False)
    else:
        backbone = AutoModel.from_pretrained(path, dtype=dtype)
    config = backbone.config
    head = torch.nn.Linear(config.hidden_size, 1, dtype=head_dtype or dtype)
    if is_prm_dir(path):
        marker = json.loads((path / MARKER).read_text())
        if marker.get("format") != FORMAT:
            raise ValueError(f"{path / MARKER}: unknown PRM format {marker.get('format')!r}, expected {FORMAT!r}")
        head.load_state_dict({k: v.to(head.weight.dtype) for k, v in load_file(path / HEAD_FILE).items()})
    else:
        with torch.no_grad():
            head.weight.normal_(0.0, config.initializer_range)
            head.bias.zero_()
    return RewardModel(backbone, head, lm).to(device)


def save_reward_model(
    model: torch.nn.Module,
    tokenizer_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a (possibly FSDP2-sharded) RewardModel to `out` as a PRM directory, atomically, from rank 0.

    Every rank must call this: gathering the full weights is a collective. `dtype` casts the backbone's weights
    (e.g. bf16 on GPU); the head is stored in float32.
    """
    out = Path(out)
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not dist.is_initialized() or dist.get_rank() == 0:
        backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        head = {k.removeprefix("head."): v.float().contiguous() for k, v in state.items() if k.startswith("head.")}
        if dtype is not None:
            backbone = {k: v.to(dtype) for k, v in backbone.items()}
        with atomic_path(out, directory=True) as tmp:
            model.backbone.save_pretrained(tmp, state_dict=backbone, safe_serialization=True)
            AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(tmp)
            save_file(head, str(tmp / HEAD_FILE))
            if dtype is not None:
                config = json.loads((tmp / "config.json").read_text())
                config["dtype"] = str(dtype).removeprefix("torch.")
                (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            (tmp / MARKER).write_text(json.dumps({"format": FORMAT, "head": HEAD_FILE}, indent=2) + "\n")
    if dist.is_initialized():
        dist.barrier()
    return out
