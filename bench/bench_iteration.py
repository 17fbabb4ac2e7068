"""Wall-time breakdown of one B-STaR iteration on the tiny CPU setup (configs/iterate/tiny.yaml).

Run after `make demo` (it provides the SFT policy and data):
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_iteration.py [--out /tmp/bench_iteration]
Engine start-up is not part of an iteration and is left out; the first iteration evaluates P0 too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from jsonargparse import CLI

ROOT = Path(__file__).resolve().parents[1]
PHASES = (
    "search_sampling",
    "search_scoring",
    "sampling",
    "scoring",
    "selection",
    "training",
    "export",
    "swap",
    "evaluation",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_iteration"))
    args = parser.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from bstar_pl.config import Config
    from bstar_pl.loop import run
    from bstar_pl.rundir import iteration_dir

    shutil.rmtree(args.out, ignore_errors=True)
    os.chdir(ROOT)
    cfg = CLI(Config, args=["--config", "configs/iterate/tiny.yaml", "--out", str(args.out), "--iterations", "1"])
    run(cfg)
    seconds = json.loads((iteration_dir(args.out, 1) / "timings.json").read_text())
    total = sum(seconds.get(p, 0.0) for p in PHASES)
    print(f"\n{'phase':<16}{'seconds':>10}{'share':>9}", file=sys.stderr)
    for phase in PHASES:
        print(f"{phase:<16}{seconds.get(phase, 0.0):>10.3f}{seconds.get(phase, 0.0) / total:>9.2%}", file=sys.stderr)
    print(f"{'iteration':<16}{total:>10.3f}", file=sys.stderr)
    compute = seconds["selection"]
    with_sampling = compute + seconds["search_sampling"] + seconds["search_scoring"]
    print(f"selection: {compute / total:.2%} of the iteration", file=sys.stderr)
    print(f"search incl. its sampling and scoring, + selection: {with_sampling / total:.2%}", file=sys.stderr)
    print(f"sampling tokens/s: {seconds['sampling_tokens_per_s']:.0f}", file=sys.stderr)


if __name__ == "__main__":
    main()
