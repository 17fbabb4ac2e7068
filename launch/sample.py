"""Sample a problems file with the vLLM engine: one process, or one engine per rank under torchrun.

torchrun --nproc_per_node=2 launch/sample.py --model DIR --problems dev.jsonl --out s.jsonl --samples 4
"""

from __future__ import annotations

import os

# Before torch or vLLM is imported: see DESIGN.md §3 (threads; an in-process engine).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import torch
from jsonargparse import CLI

from bstar_pl.records import Problem, read_jsonl, write_jsonl
from bstar_pl.sampler import Sampler
from bstar_pl.template import PLAIN, PromptFormat


def main(
    model: str,
    problems: str,
    out: str,
    temperatures: list[float] = [1.0],  # noqa: B006 (read-only; jsonargparse needs a literal default)
    samples: int = 1,
    dtype: str = "auto",
    max_model_len: int = 2048,
    max_new_tokens: int = 768,
    tensor_parallel_size: int = 1,
    seed: int = 0,
    prompt: PromptFormat = PLAIN,
) -> None:
    """Write `samples` samples per problem at each temperature to `out` (JSON lines, problem order).

    Under torchrun every rank starts its own engine (`external_launcher`) and samples its share; rank 0
    writes the gathered samples. The process group is created here, before the engine: otherwise vLLM
    creates a world of one.
    """
    backend = None
    if "RANK" in os.environ:
        on_gpu = torch.cuda.is_available()
        if on_gpu:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        torch.distributed.init_process_group("nccl" if on_gpu else "gloo")
        backend = "external_launcher"
    sampler = Sampler(
        model,
        dtype=dtype,
        max_model_len=max_model_len,
        max_new_tokens=max_new_tokens,
        tensor_parallel_size=tensor_parallel_size,
        seed=seed,
        distributed_executor_backend=backend,
        prompt=prompt,
    )
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    out_samples = sampler.generate(read_jsonl(problems, Problem), temperatures, samples, progress=rank == 0)
    if rank == 0:
        write_jsonl(out, out_samples)


if __name__ == "__main__":
    CLI(main, as_positional=False)
