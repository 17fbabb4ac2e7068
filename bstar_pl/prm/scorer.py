"""The PRM at inference: step scores of (question, response) pairs, and a solution's score from them.

One forward pass per response, responses batched by length; a step's score is read at the step's score token
(prm/alignment.py). By default it is the PRM's logit clipped to [-5, 5], so that r_prm = min / 5 lies in [-1, 1],
the range the paper's threshold grid (-1 ... 1) spans: a wrong answer passes τ = 0 only when the PRM believes every step
(logit > 0), and a right one whose steps the PRM doubts scores below 1. `score="probability"` gives the sigmoid
instead (r_prm in [0, 0.2], where τ = 0 keeps every wrong answer). A response whose steps cannot be placed on its
tokens is flagged `aligned=False`, never given a made-up score.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoTokenizer

from bstar_pl import dist
from bstar_pl.dtypes import dtype as dtype_of
from bstar_pl.prm.alignment import StepTokens, encode_steps, prm_steps
from bstar_pl.prm.model import load_reward_model
from bstar_pl.prompt import PLAIN, PromptFormat


@dataclass(frozen=True)
class StepScores:
    """One response's step scores (clipped logits or probabilities, one per PRM step); empty and
    `aligned=False` when its steps could not be aligned with its tokens."""

    scores: list[float]
    aligned: bool


def solution_score(scores: Sequence[float], how: str = "min") -> float:
    """A solution's score from its step scores: the minimum (paper), the last step's, or the product."""
    if not scores:
        raise ValueError("no step scores: an unaligned response has no solution score")
    if how == "min":
        return min(scores)
    if how == "last":
        return scores[-1]
    if how == "prod":
        return math.prod(scores)
    raise ValueError(f"how must be 'min', 'last' or 'prod', got {how!r}")


class PRMScorer:
    """A saved PRM directory, ready to score (question, response) pairs.

    Args:
        path: PRM directory (`PRMModule`'s export).
        device: where the model runs ("cpu", "cuda", ...).
        dtype: backbone dtype ("float32", "bfloat16", ...); a head computes in float32, an implicit PRM's
            log-likelihood ratios are taken in float32.
        max_batch_tokens: padded tokens per forward pass (batch rows × longest row); a longer response runs alone.
        score: "logit" (the head's logit clipped to ±`clip`) or "probability" (its sigmoid).
        clip: the logit clip (the paper divides the solution score by 5: ±5 maps r_prm onto [-1, 1]).
        prompt: the policy's prompt format, as the PRM was trained with it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str = "cpu",
        dtype: str = "float32",
        max_batch_tokens: int = 16384,
        score: str = "logit",
        clip: float = 5.0,
        prompt: PromptFormat = PLAIN,
    ) -> None:
        weights = dtype_of(dtype, "dtype")
        if score not in ("logit", "probability"):
            raise ValueError(f"score must be 'logit' or 'probability', got {score!r}")
        if not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        self.prompt = prompt
        self.score_kind = score
        self.clip = clip
        self.path = Path(path)
        self.device = torch.device(device)
        self.max_batch_tokens = max_batch_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = load_reward_model(self.path, weights, torch.float32, self.device).eval()
        self.max_len = self.model.backbone.config.max_position_embeddings
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id

    def encode(self, question: str, response: str) -> StepTokens:
        return encode_steps(self.tokenizer, question, prm_steps(response), self.prompt)

    def score(self, questions: Sequence[str], responses: Sequence[str], progress: bool = True) -> list[StepScores]:
        """Step scores of each (question, response), in order.

        Under torch.distributed every rank passes the same pairs and gets all the scores back, each rank having
        run every world-th length batch. The batches are cut from the whole list before they are dealt out, so a
        response meets the same batch (hence the same padding and the same floats) however many ranks there are.
        """
        if len(questions) != len(responses):
            raise ValueError(f"{len(questions)} questions but {len(responses)} responses")
        encoded = [self.encode(q, r) for q, r in zip(questions, responses)]
        for i, e in enumerate(encoded):
            if len(e.input_ids) > self.max_len:
                raise ValueError(f"response {i}: {len(e.input_ids)} tokens exceed the PRM's {self.max_len} positions")
        results = [StepScores([], False) for _ in encoded]
        order = sorted((i for i, e in enumerate(encoded) if e.aligned), key=lambda i: len(encoded[i].input_ids))
        rank, world = dist.shard()
        batches = length_batches([len(encoded[i].input_ids) for i in order], self.max_batch_tokens)[rank::world]
        mine: dict[int, list[float]] = {}
        with tqdm(total=sum(map(len, batches)), desc="PRM scoring", disable=not progress) as bar:
            for batch in batches:
                rows = [order[k] for k in batch]
                mine.update(zip(rows, self._forward([encoded[i] for i in rows])))
                bar.update(len(rows))
        parts = [mine]
        if world > 1:
            parts = [{} for _ in range(world)]
            torch.distributed.all_gather_object(parts, mine)
        for part in parts:
            for i, scores in part.items():
                results[i] = StepScores(scores, True)
        return results

    @torch.inference_mode()
    def _forward(self, batch: list[StepTokens]) -> list[list[float]]:
        width = max(len(e.input_ids) for e in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, e in enumerate(batch):
            ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
            mask[row, : len(e.input_ids)] = 1
        logits = self.model(ids.to(self.device), mask.to(self.device)).float().cpu()
        scores = logits.clamp(-self.clip, self.clip) if self.score_kind == "logit" else torch.sigmoid(logits)
        return [scores[row, e.ends].tolist() for row, e in enumerate(batch)]


def length_batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Consecutive index runs of `lengths` (sorted ascending) whose padded size (rows × longest) fits the budget."""
    batches: list[list[int]] = []
    for i, n in enumerate(lengths):
        if batches and (len(batches[-1]) + 1) * n <= max_batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches
