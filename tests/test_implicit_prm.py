"""The implicit PRM: its logits against a prefix-by-prefix likelihood computation, its directory, its scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bstar_pl.prm.implicit import ImplicitRewardModel
from bstar_pl.prm.model import MARKER, REFERENCE_DIR, load_reward_model, save_reward_model
from bstar_pl.prm.module import PRMModule
from bstar_pl.prm.scorer import PRMScorer

QUESTION, RESPONSE = "What is 3 + 4 - 2?", "3 + 4 = 7\n\n7 - 2 = 5\n\n# Answer\n\n5"


def prefix_logprob(model: torch.nn.Module, ids: list[int], t: int) -> float:
    """log p(ids[:t+1]) given ids[0], one forward pass per prefix: no batching, no cumulative sum."""
    total = 0.0
    with torch.no_grad():
        for s in range(1, t + 1):
            logits = model(input_ids=torch.tensor([ids[:s]])).logits[0, -1]
            total += torch.log_softmax(logits.double(), -1)[ids[s]].item()
    return total


def test_logits_are_beta_times_the_log_likelihood_ratio(tiny_model_dir: Path, tiny_model_dir_b: Path) -> None:
    trained = AutoModelForCausalLM.from_pretrained(tiny_model_dir_b, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = ImplicitRewardModel(trained, reference, beta=0.3)
    ids = AutoTokenizer.from_pretrained(tiny_model_dir)(QUESTION + RESPONSE)["input_ids"][:12]
    short = ids[:7]
    batch = torch.tensor([ids, short + [0] * (len(ids) - len(short))])
    mask = torch.tensor([[1] * len(ids), [1] * len(short) + [0] * (len(ids) - len(short))])
    with torch.no_grad():
        logits = model(batch, mask)
    for t in (0, 3, len(ids) - 1):
        expected = 0.3 * (prefix_logprob(trained, ids, t) - prefix_logprob(reference, ids, t))
        assert logits[0, t].item() == pytest.approx(expected, abs=1e-4)
    # A padded row gives what it gives alone; a model scored against itself gives 0 everywhere.
    with torch.no_grad():
        alone = model(torch.tensor([short]))
        assert torch.allclose(logits[1, : len(short)], alone[0], atol=1e-5)
        same = ImplicitRewardModel(reference, AutoModelForCausalLM.from_pretrained(tiny_model_dir), beta=0.3)
        assert torch.equal(same(batch, mask), torch.zeros_like(logits))
    assert not any(p.requires_grad for p in model.reference.parameters())
    with pytest.raises(ValueError, match="beta must be > 0"):
        ImplicitRewardModel(trained, reference, beta=0.0)


def test_directory_round_trip_and_scoring(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = load_reward_model(tiny_model_dir, reward="implicit", beta=0.5)
    assert isinstance(model, ImplicitRewardModel)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.02 * torch.randn_like(p))
    out = save_reward_model(model, tiny_model_dir, tmp_path / "prm")
    assert json.loads((out / MARKER).read_text()) == {
        "format": "bstar_pl.prm.module/1",
        "reward": "implicit",
        "beta": 0.5,
    }
    # The reference is the starting model, unchanged; the directory reloads as it was saved.
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    saved_reference = AutoModelForCausalLM.from_pretrained(out / REFERENCE_DIR).state_dict()
    assert all(torch.equal(original[k], saved_reference[k]) for k in original)
    reloaded = load_reward_model(out)
    scorer = PRMScorer(out)
    st = scorer.encode(QUESTION, RESPONSE)
    with torch.no_grad():
        logits = model(torch.tensor([st.input_ids]))[0]
        assert torch.allclose(reloaded(torch.tensor([st.input_ids]))[0], logits, atol=1e-6)
    (scores,) = scorer.score([QUESTION], [RESPONSE], progress=False)
    assert len(scores.scores) == 2 and any(abs(s) > 1e-3 for s in scores.scores)
    assert scores.scores == pytest.approx(logits[st.ends].clamp(-5, 5).tolist(), abs=1e-5)
    with pytest.raises(ValueError, match="holds a 'implicit' PRM, not 'head'"):
        load_reward_model(out, reward="head")


def test_module_rejects_unknown_rewards_and_lm_weight_on_implicit(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="reward must be one of"):
        PRMModule(str(tiny_model_dir), reward="pairwise")
    with pytest.raises(ValueError, match="lm_weight"):
        PRMModule(str(tiny_model_dir), reward="implicit", lm_weight=1.0)
