"""The vLLM engine: one call samples a whole batch at several temperatures; weights swap in place.

Every call that depends on the vLLM version lives in this file and in engine_weights.py (see setup.cfg for the
releases they are tested with).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer

from bstar_pl import dist
from bstar_pl.engine_weights import check_weights, checkpoint_shapes, refresh_tied_modules, tied_aliases
from bstar_pl.prompt import PLAIN, PromptFormat, prompt_ids
from bstar_pl.records import Problem, Sample, temperature_key
from bstar_pl.seeding import derive_seed
from bstar_pl.settings import EngineSettings

Weights = Iterable[tuple[str, torch.Tensor]]


class Engine:
    """A vLLM engine serving one policy at a time, with our prompt format and seeding.

    The engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0 unless set otherwise), so new
    weights stream from the trainer as tensors; in multiprocess mode they go through a temporary
    safetensors directory instead, since tensors passed to a worker process arrive as lists there.
    Under torchrun every rank holds an engine (`external_launcher`; tensor-parallel groups of
    `settings.tensor_parallel_size` ranks) and samples its share. `prompt` is the prompt format the policy
    was trained with (plain B-STaR text, or the tokenizer's chat template); `seed` seeds requests unless a
    call gives its own.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        settings: EngineSettings = EngineSettings(),
        *,
        seed: int = 0,
        prompt: PromptFormat = PLAIN,
        rpc_timeout: float = 600.0,
    ) -> None:
        if settings.enable_sleep_mode and not torch.cuda.is_available():
            raise ValueError("enable_sleep_mode needs a GPU: vLLM has no sleep mode on CPU")
        self.path = Path(model)
        self.shapes = checkpoint_shapes(self.path)
        self.aliases = tied_aliases(self.path)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.settings, self.prompt, self.seed, self.rpc_timeout = settings, prompt, seed, rpc_timeout
        self.sleep_mode = settings.enable_sleep_mode
        self.asleep: set[str] = set()  # memory tags put to sleep and not woken yet
        self.in_process = os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        on_gpu = torch.cuda.is_available()
        self.llm = LLM(
            model=str(self.path),
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
            tensor_parallel_size=settings.tensor_parallel_size,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            enable_sleep_mode=settings.enable_sleep_mode,
            seed=seed,
            distributed_executor_backend="external_launcher" if dist.world_size() > 1 else None,
            # CUDA graphs pay off on GPU; on CPU eager mode starts in seconds.
            enforce_eager=not on_gpu,
            # A prompt prefilled in chunks makes vLLM rewind the request's seeded generator, which
            # CPU generators cannot do ("CPU Generator does not use offset"): prefill whole prompts.
            enable_chunked_prefill=on_gpu,
            max_num_batched_tokens=None if on_gpu else max(settings.max_model_len, 8192),
        )

    def generate(
        self,
        problems: Sequence[Problem],
        temperatures: Sequence[float],
        n: int,
        *,
        seed: int | None = None,
        max_new_tokens: int | None = None,
        progress: bool | None = None,
    ) -> list[Sample]:
        """`n` samples per problem at each temperature, in one engine call, ordered by problem, then
        temperature, then sample index. Temperature 0 is greedy and takes n = 1. Samples cut by the
        token limit come back with finish_reason "length"; none is dropped. A request's seed is derived from
        `seed` (default: the engine's), the problem id and the temperature, so it does not depend on batch
        order, shard or rank; vLLM gives sample i of a request the seed `seed + i`.

        Over several ranks each data-parallel rank samples its shard and all ranks get every sample.
        """
        from vllm import SamplingParams

        self._awake("weights", "kv_cache")
        if n < 1 or not temperatures:
            raise ValueError(f"need n >= 1 and at least one temperature, got n={n}, temperatures={temperatures}")
        if any(t < 0 for t in temperatures) or (0 in temperatures and n > 1):
            raise ValueError(f"temperatures must be >= 0, and 0 (greedy) takes n = 1; got {temperatures}, n={n}")
        if len({temperature_key(t) for t in temperatures}) < len(temperatures):
            raise ValueError(f"temperatures repeat (they would share seeds): {temperatures}")
        if len({p.id for p in problems}) < len(problems):
            raise ValueError("problem ids repeat: samples are keyed and seeded by problem id")
        limit = self.settings.max_new_tokens if max_new_tokens is None else max_new_tokens
        if limit < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {limit}")
        # Every rank checks every prompt, so a bad one fails on all ranks alike, not as a hang in the gather.
        ids = [prompt_ids(self.tokenizer, p.question, self.prompt) for p in problems]  # as SFT tokenises them
        for problem, tokens in zip(problems, ids):
            if len(tokens) >= self.settings.max_model_len:
                raise ValueError(f"problem {problem.id}: prompt of {len(tokens)} tokens fills max_model_len")
        rank, shards = dist.shard(self.settings.tensor_parallel_size)
        mine = list(problems)[rank::shards]
        prompts, params = [], []
        for problem, tokens in zip(mine, ids[rank::shards]):
            room = self.settings.max_model_len - len(tokens)
            for t in temperatures:
                prompts.append({"prompt_token_ids": tokens})
                s = derive_seed(self.seed if seed is None else seed, problem.id, temperature_key(t))
                params.append(SamplingParams(n=n, temperature=t, top_p=1.0, max_tokens=min(limit, room), seed=s))
        outputs = self.llm.generate(prompts, params, use_tqdm=bars(progress)) if prompts else []
        samples = []
        for k, output in enumerate(outputs):
            problem, t = mine[k // len(temperatures)], temperatures[k % len(temperatures)]
            for c in sorted(output.outputs, key=lambda c: c.index):
                if c.finish_reason not in ("stop", "length"):
                    raise RuntimeError(f"problem {problem.id}: generation ended with {c.finish_reason!r}")
                samples.append(Sample(problem.id, float(t), c.index, c.text, len(c.token_ids), c.finish_reason))
        return samples if shards == 1 else _gather(samples, problems, self.settings.tensor_parallel_size)

    def complete(
        self,
        requests: Sequence[tuple[str, str, str]],
        temperature: float,
        n: int,
        *,
        seed: int | None = None,
        max_new_tokens: int | None = None,
        progress: bool | None = None,
    ) -> list[list[str]]:
        """`n` continuations of each request `(key, question, prefix)`: the policy prompt of `question` followed by
        the response prefix `prefix` (tokenised on its own, as SFT tokenises a response), seeded by `key`.

        For Math-Shepherd labels: complete a solution from each of its steps. A prefix that fills the context gets
        no continuations (an empty list). One process only: requests are not sharded over ranks.
        """
        from vllm import SamplingParams

        self._awake("weights", "kv_cache")
        if n < 1 or temperature <= 0:
            raise ValueError(f"need n >= 1 and temperature > 0, got n={n}, temperature={temperature}")
        limit = self.settings.max_new_tokens if max_new_tokens is None else max_new_tokens
        prompts, params, slots = [], [], []
        for k, (key, question, prefix) in enumerate(requests):
            tokens = prompt_ids(self.tokenizer, question, self.prompt)
            tokens += self.tokenizer(prefix, add_special_tokens=False).input_ids
            room = min(limit, self.settings.max_model_len - len(tokens))
            if room < 1:
                continue
            s = derive_seed(self.seed if seed is None else seed, key, temperature_key(temperature))
            prompts.append({"prompt_token_ids": tokens})
            params.append(SamplingParams(n=n, temperature=temperature, top_p=1.0, max_tokens=room, seed=s))
            slots.append(k)
        outputs = self.llm.generate(prompts, params, use_tqdm=bars(progress)) if prompts else []
        texts: list[list[str]] = [[] for _ in requests]
        for k, output in zip(slots, outputs):
            texts[k] = [c.text for c in sorted(output.outputs, key=lambda c: c.index)]
        return texts

    def load_weights(self, weights: Weights, source: str | os.PathLike[str] | None = None) -> None:
        """Swap new weights (HF checkpoint names, any float dtype) into the running engine.

        Names and shapes are checked against the checkpoint before anything is loaded, so a bad tensor
        leaves the engine as it was. Should loading itself fail half-way, the engine goes back to the
        checkpoint it last read from disk (`self.path`) and stays usable. `source`, when the same
        weights are also saved as an HF directory, becomes that restore point after a successful swap.
        """
        self._awake("weights")
        weights = list(weights)
        check_weights({name: tuple(t.shape) for name, t in weights}, self.shapes, "weights", self.aliases)
        weights = [(name, t) for name, t in weights if name not in self.aliases]  # the tensor it shares is there
        if self.in_process:
            self._reload(weights_iterator=weights)
        else:
            with tempfile.TemporaryDirectory(prefix="bstar-weights-") as tmp:
                save_file({name: t.contiguous() for name, t in weights}, str(Path(tmp) / "model.safetensors"))
                self._reload(weights_path=tmp)
        if source is not None:
            self.path = Path(source)

    def serve(self, path: str | os.PathLike[str]) -> None:
        """Hold the weights of the HF checkpoint at `path`: read from disk unless they were the last loaded."""
        if Path(path) != self.path:
            self.reload(path)

    def reload(self, path: str | os.PathLike[str]) -> None:
        """Load the weights of the HF checkpoint at `path` (same architecture) into the running engine."""
        path = Path(path)
        check_weights(checkpoint_shapes(path), self.shapes, str(path), self.aliases)
        self._reload(weights_path=str(path))
        self.path = path

    def sleep(self) -> None:
        """Free accelerator memory for training (level 1): weights move to host memory, the KV cache is dropped."""
        if not self.sleep_mode:
            raise RuntimeError("the engine was built without enable_sleep_mode=True (GPU only)")
        self.llm.sleep(level=1)
        self.asleep = {"weights", "kv_cache"}

    def wake(self, tags: Sequence[str] | None = None) -> None:
        """Wake the engine, all of it or the memory of some `tags` ("weights", "kv_cache").

        After training, wake in three steps so the new weights never share the device with a KV cache:
        `wake(["weights"])` (the old weights come back from host memory), `load_weights(new)`, then
        `wake(["kv_cache"])`. `wake()` wakes everything.
        """
        if not self.sleep_mode:
            raise RuntimeError("the engine was built without enable_sleep_mode=True (GPU only)")
        tags = sorted(self.asleep if tags is None else set(tags) & self.asleep)
        if tags:
            self.llm.wake_up(tags)
        self.asleep -= set(tags)

    def _awake(self, *tags: str) -> None:
        """Fail clearly, rather than crash the engine, when memory that a call needs is still asleep."""
        if asleep := sorted(self.asleep & set(tags)):
            raise RuntimeError(f"the engine's {' and '.join(asleep)} memory is asleep: call wake() first")

    def _reload(self, **source: object) -> None:
        try:
            self.llm.collective_rpc("reload_weights", timeout=self.rpc_timeout, kwargs=source)
        except Exception:
            # A half-finished load leaves a mix of old and new tensors: put the old ones back.
            self.llm.collective_rpc("reload_weights", timeout=self.rpc_timeout, kwargs={"weights_path": str(self.path)})
            raise
        finally:
            self.llm.collective_rpc(refresh_tied_modules, timeout=self.rpc_timeout)
            self.llm.reset_prefix_cache()


def bars(progress: bool | None) -> bool:
    """Whether vLLM draws progress bars: as asked, or (None) only on a terminal, so that logs stay readable."""
    return sys.stderr.isatty() if progress is None else progress


def _gather(mine: list[Sample], problems: Sequence[Problem], tp: int) -> list[Sample]:
    """All-gather every shard's samples and put them back in problem order (then temperature, index)."""
    parts: list[list[Sample]] = [[] for _ in range(dist.world_size())]
    torch.distributed.all_gather_object(parts, mine)
    by_problem: dict[str, list[Sample]] = {}
    for part in parts[::tp]:  # one copy per tensor-parallel group
        for sample in part:
            by_problem.setdefault(sample.problem_id, []).append(sample)
    return [s for p in problems for s in by_problem.get(p.id, [])]
