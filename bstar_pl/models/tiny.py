"""A tiny model kit, fully offline: a sentencepiece tokenizer trained on task text and a small Llama.

The directory it writes is an ordinary Hugging Face checkpoint: transformers and vLLM load it.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaTokenizer, PreTrainedTokenizerBase

from bstar_pl.atomic import atomic_path
from bstar_pl.prompt import prompt
from bstar_pl.tasks import arithmetic

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"


def corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """Prompts and solutions of the arithmetic task with every operator, to train the tokenizer on."""
    spec = arithmetic.ArithmeticSpec(min_terms=2, max_terms=6, max_operand=99, operators="+-*")
    return [prompt(p.question) + p.solution for p in arithmetic.generate("train", n, spec, seed)]


def train_tokenizer(texts: list[str], out: Path, vocab_size: int = 64) -> PreTrainedTokenizerBase:
    """Train a BPE sentencepiece model on `texts` and save it in `out` as an HF tokenizer.

    Digits are split and "\\n" is a symbol of its own, so numbers and step breaks tokenise the
    same everywhere; whitespace is kept as is, since the format depends on exact blank lines.
    """
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        split_digits=True,
        byte_fallback=False,
        user_defined_symbols=["\n"],
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        max_sentence_length=1 << 16,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        pad_piece=PAD,
        unk_piece=UNK,
        bos_piece=BOS,
        eos_piece=EOS,
        minloglevel=2,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(model.getvalue())
    # transformers 5 ignores LlamaTokenizer(vocab_file=...): load from the directory instead.
    tokenizer = LlamaTokenizer.from_pretrained(
        out, add_prefix_space=False, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )
    tokenizer.save_pretrained(out)
    return AutoTokenizer.from_pretrained(out)


@dataclass(frozen=True)
class Shape:
    """A small Llama's size: decoder layers, hidden width, attention heads (vLLM's CPU attention needs a head
    dimension >= 32), feed-forward width (default 4 x hidden), positions; `tied`: the output layer shares the input
    embedding (as SmolLM2's does)."""

    layers: int = 4
    hidden: int = 128
    heads: int = 4
    intermediate: int | None = None
    max_positions: int = 512
    tied: bool = False


def build_model(
    out: Path, tokenizer: PreTrainedTokenizerBase, shape: Shape = Shape(), seed: int = 0
) -> LlamaForCausalLM:
    """A randomly initialised Llama of `shape`, saved in `out` (safetensors, fp32)."""
    if shape.hidden % shape.heads or shape.hidden // shape.heads < 32:
        raise ValueError(
            f"hidden/heads must be a whole head dimension >= 32 (vLLM CPU attention), got {shape.hidden}/{shape.heads}"
        )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate or 4 * shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=shape.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=shape.tied,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    return model


def make_tiny(out: str | os.PathLike[str], vocab_size: int = 64, shape: Shape = Shape(), seed: int = 0) -> Path:
    """Write a tiny HF checkpoint (tokenizer + random Llama of `shape`) to `out`, atomically; return `out`.

    The tokenizer does not depend on `seed`: models of different seeds share it, so the weights
    of one can be swapped into an engine serving the other.
    """
    out = Path(out)
    with atomic_path(out, directory=True) as tmp:
        tokenizer = train_tokenizer(corpus(), tmp, vocab_size)
        build_model(tmp, tokenizer, shape, seed)
    return out
