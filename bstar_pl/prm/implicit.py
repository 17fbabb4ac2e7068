"""The implicit PRM: a trained copy of a causal LM scored against the frozen original, one logit per token.

A token's logit is beta times the log-likelihood ratio of everything up to it, log pi(x_<=t) / pi_ref(x_<=t),
the sum of the per-token log-ratios (Yuan et al. 2024, "Free process rewards without process labels"). It is
trained exactly as the scalar-head PRM is, with BCE at the same tokens on the same labels, and read at the same
tokens. The difference is where the score comes from: it starts at 0 and moves only by changing the LM's own
next-token probabilities, so it can use what the LM knows about the text (here: its arithmetic), where a new
scalar head has to learn that from the labels alone. The question's tokens are in the sum too: their ratio is the
same for every response to a question, so it cannot change a ranking within a question, and it lets the model
express how often a question is solved, as the scalar head's logit can.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel


class ImplicitRewardModel(torch.nn.Module):
    """`backbone` (trained) against `reference` (frozen, its starting weights) -> one float32 logit per token."""

    def __init__(self, backbone: PreTrainedModel, reference: PreTrainedModel, beta: float) -> None:
        super().__init__()
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.backbone, self.reference, self.beta = backbone, reference.requires_grad_(False).eval(), beta

    def train(self, mode: bool = True) -> ImplicitRewardModel:
        """The reference stays in eval mode (no dropout): it is a fixed function."""
        super().train(mode)
        self.reference.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        logp = token_logprobs(self.backbone, input_ids, attention_mask)
        with torch.no_grad():
            ref = token_logprobs(self.reference, input_ids, attention_mask)
        return self.beta * torch.cumsum(logp - ref, dim=1)


def token_logprobs(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """log p(token t | tokens before it) in float32 at every position t; 0 at the first, which has no context."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    targets = input_ids[:, 1:]
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
    return F.pad(-nll, (1, 0))
