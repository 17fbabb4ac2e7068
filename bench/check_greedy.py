"""Do a run's saved greedy responses equal transformers' greedy decoding of the same policy?

Iteration i's `test_<name>.jsonl` holds the engine's greedy responses, sampled after the new weights were
swapped into the running engine in place. This decodes the first `--n` of those problems again with
transformers `generate` from the exported `policy/`, one prompt at a time (no padding), and compares texts:

    .venv/bin/python bench/check_greedy.py --run runs/real/bstar_seed0 --iteration 2 --test held_out --n 8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bstar_pl import tasks
from bstar_pl.prompt import PromptFormat, prompt_ids
from bstar_pl.records import Sample, read_jsonl
from bstar_pl.rundir import iteration_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a `bstar-pl iterate` run directory")
    parser.add_argument(
        "--iteration",
        type=int,
        required=True,
        help="0 (P0, the engine's first weights) or an iteration whose policy was swapped in",
    )
    parser.add_argument("--test", required=True, help="the test set's name in the run's config")
    parser.add_argument("--n", type=int, default=8, help="how many problems to decode again")
    args = parser.parse_args()

    cfg = json.loads((args.run / "config.json").read_text())
    spec = cfg["data"]["tests"][args.test]
    task = tasks.get(spec.get("task") or cfg["data"]["task"])
    problems = {p.id: p for p in task.load(Path(spec["path"]), limit=spec.get("size"))}
    folder = iteration_dir(args.run, args.iteration)
    greedy = [s for s in read_jsonl(folder / f"test_{args.test}.jsonl", Sample) if s.temperature == 0.0][: args.n]
    fmt = PromptFormat(**cfg["prompt"])
    policy = Path(cfg["policy"]) if args.iteration == 0 else folder / "policy"
    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32).eval()
    same = 0
    for sample in greedy:
        ids = torch.tensor([prompt_ids(tokenizer, problems[sample.problem_id].question, fmt)])
        with torch.no_grad():
            out = model.generate(
                ids,
                max_new_tokens=cfg["engine"]["max_new_tokens"],
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        first = next((k for k, (a, b) in enumerate(zip(text, sample.text)) if a != b), min(len(text), len(sample.text)))
        equal = text == sample.text
        same += equal
        verdict = "equal" if equal else f"differs at character {first}"
        print(f"{sample.problem_id}: {verdict} ({sample.n_tokens} tokens)")
        if not equal:
            print(f"    engine:       {sample.text[max(0, first - 40) : first + 40]!r}")
            print(f"    transformers: {text[max(0, first - 40) : first + 40]!r}")
    print(f"identical greedy responses: {same} of {len(greedy)}")


if __name__ == "__main__":
    main()
