"""The checks and fixes around an in-place weight swap in vLLM: a checkpoint's tensor names and shapes read from its
file headers, tied weights, and the post-load processing vLLM's reload skips for tied modules."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open


def refresh_tied_modules(worker: object) -> list[str]:
    """Redo the post-load processing of modules whose weights are all tied to an earlier module's.

    vLLM 0.32's in-place reload skips such a module ("ParallelLMHead: Failed to load weights"): the shared
    tensor takes the new values, but what the module prepared from it at start-up stays. On CPU that is the
    oneDNN-packed copy of the tied lm_head, so logits kept coming from the old embedding. Runs on every
    worker (a top-level function, so it pickles); returns the names of the modules refreshed.
    """
    model = worker.get_model()  # type: ignore[attr-defined]
    owner: set[int] = set()
    refreshed = []
    for name, module in model.named_modules():
        params = list(module.parameters(recurse=False))
        method = getattr(module, "quant_method", None)
        if params and all(id(p) in owner for p in params) and hasattr(method, "process_weights_after_loading"):
            method.process_weights_after_loading(module)
            refreshed.append(name)
        owner.update(id(p) for p in params)
    return refreshed


def checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors of an HF safetensors checkpoint, read from the file headers."""
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a model directory (no config.json)")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors weights")
    shapes = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                    shapes[name] = tuple(f.get_slice(name).get_shape())
        except Exception as e:
            raise ValueError(f"{file}: unreadable safetensors file ({e})") from None
    return shapes


def tied_aliases(path: Path) -> dict[str, str]:
    """Weights a model may name or omit because they share another's tensor: {alias: stored name}.

    With tied embeddings (e.g. SmolLM2) the checkpoint stores one copy, while a trainer's state dict
    names both and `named_parameters` only the embedding; vLLM accepts either.
    """
    config = json.loads((path / "config.json").read_text())
    return {"lm_head.weight": "model.embed_tokens.weight"} if config.get("tie_word_embeddings") else {}


def check_weights(
    got: dict[str, tuple[int, ...]], want: dict[str, tuple[int, ...]], source: str, aliases: dict[str, str]
) -> None:
    """Fail with the first unknown, missing or misshapen weight, before any of them reaches the engine."""
    want = {**{a: want[b] for a, b in aliases.items() if b in want}, **want}
    unknown = sorted(set(got) - set(want))
    if unknown:
        raise ValueError(f"{source}: unknown weight {unknown[0]!r} (the engine's model has no such tensor)")
    missing = sorted(set(want) - set(got) - set(aliases))
    if missing:
        raise ValueError(f"{source}: missing weight {missing[0]!r} ({len(missing)} missing in all)")
    for name, shape in got.items():
        if shape != want[name]:
            raise ValueError(
                f"{source}: weight {name!r} has shape {list(shape)}, the engine expects {list(want[name])}"
            )
