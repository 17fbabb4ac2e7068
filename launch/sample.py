"""Sample a problems file with the vLLM engine: one process, or one engine per rank under torchrun.

torchrun --nproc_per_node=2 launch/sample.py --model DIR --problems dev.jsonl --out s.jsonl --samples 4
"""

from __future__ import annotations

import os

# Before torch or vLLM is imported: see DESIGN.md §3 (threads; an in-process engine).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from jsonargparse import CLI

from bstar_pl import dist
from bstar_pl.engine import Engine
from bstar_pl.prompt import PLAIN, PromptFormat
from bstar_pl.records import Problem, read_jsonl, write_jsonl
from bstar_pl.settings import EngineSettings


def main(
    model: str,
    problems: str,
    out: str,
    temperatures: list[float] = [1.0],  # noqa: B006 (read-only; jsonargparse needs a literal default)
    samples: int = 1,
    engine: EngineSettings = EngineSettings(),
    seed: int = 0,
    prompt: PromptFormat = PLAIN,
) -> None:
    """Write `samples` samples per problem at each temperature to `out` (JSON lines, problem order).

    Under torchrun every rank starts its own engine (`external_launcher`) and samples its share; rank 0
    writes the gathered samples. The process group is created here, before the engine: otherwise vLLM
    creates a world of one.
    """
    dist.init()
    served = Engine(model, engine, seed=seed, prompt=prompt)
    out_samples = served.generate(read_jsonl(problems, Problem), temperatures, samples, progress=dist.rank() == 0)
    if dist.rank() == 0:
        write_jsonl(out, out_samples)


if __name__ == "__main__":
    CLI(main, as_positional=False)
