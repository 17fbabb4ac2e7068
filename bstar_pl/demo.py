"""The tiny end-to-end run on CPU: build a model and data offline, fine-tune, sample with vLLM, grade.

Each phase writes one artefact atomically and is skipped when it exists: re-running resumes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bstar_pl.atomic import atomic_write_text
from bstar_pl.evaluate import format_table, sample_metrics
from bstar_pl.records import Problem, Sample, read_jsonl, write_jsonl
from bstar_pl.tasks import arithmetic
from bstar_pl.tiny import make_tiny


def demo(
    out: Path = Path("runs/demo"),
    temperatures: tuple[float, ...] = (0.4, 0.8, 1.2),
    samples_per_problem: int = 8,
    problems: int = 200,
    max_new_tokens: int = 96,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Run the demo into `out` and return the per-temperature metrics of the sampled dev problems."""
    started = time.perf_counter()
    base = out / "base"
    if not (base / "config.json").exists():
        make_tiny(base, seed=seed)
    data = out / "data"
    if not (data / "test.jsonl").exists():
        arithmetic.write_splits(data, seed=seed)
    dev = read_jsonl(data / "dev.jsonl", Problem)[:problems]
    policy = base

    samples_path = out / "samples.jsonl"
    if not samples_path.exists():
        from bstar_pl.sampler import Sampler

        sampler = Sampler(policy, dtype="float32", max_model_len=512, max_new_tokens=max_new_tokens, seed=seed)
        write_jsonl(samples_path, sampler.generate(dev, temperatures, samples_per_problem))
    samples = read_jsonl(samples_path, Sample)

    table = sample_metrics(dev, samples, arithmetic.is_correct, arithmetic.check_steps)
    atomic_write_text(out / "metrics.json", json.dumps(table, indent=2) + "\n")
    print(format_table(table))
    print(f"demo: {len(samples)} samples of {len(dev)} problems in {time.perf_counter() - started:.0f} s -> {out}")
    return table
