"""report.py and runs.py on synthetic run directories written here (metrics.json by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bstar_pl.cli import main
from bstar_pl.report.runs import group_runs, load_run, series

PNG = b"\x89PNG\r\n\x1a\n"
BASE = {"bstar": 0.10, "online_rft": 0.05}


def accuracy(mode: str, seed: int, i: int) -> float:
    """Greedy test accuracy of a synthetic run: over seeds 0, 1, 2 the mean is base + 0.1 i + 0.01, std 0.01."""
    return BASE.get(mode, 0.0) + 0.1 * i + 0.01 * seed


def write_run(
    root: Path,
    mode: str,
    seed: int,
    iterations: int = 3,
    done: int | None = None,
    config: dict[str, Any] | None = None,
    sampled: bool = False,
) -> Path:
    """A run directory as the driver writes it: config.json, iter_XX/metrics.json up to `done`."""
    out = root / f"{mode}-{seed}"
    cfg = {"out": str(out), "policy": "p0", "mode": mode, "iterations": iterations, "seed": seed}
    cfg |= {"data": {"task": "arithmetic", "tests": {"test": {"path": "t.jsonl", "task": None}}}}
    cfg |= {"selection": {"n_target": 1600, "temperature": 1.0, "threshold": 0.0}}
    for key, value in (config or {}).items():
        cfg[key] = {**cfg.get(key, {}), **value}
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(cfg))
    for i in range(iterations + 1 if done is None else done + 1):
        acc = accuracy(mode, seed, i)  # a greedy table as the driver writes it: Pass@K with K = 1
        test: dict[str, Any] = {"problems": 100, "k": 1.0, "accuracy": acc, "pass_at_k": acc, "pass_at_k_4": 0.0}
        if sampled:
            test |= {"k": 32, "s": 4, "pass_at_k": 0.9, "pass_at_k_s": 0.5 + 0.01 * seed, "reward_at_k_s": 0.3}
            test |= {"prm_auc_within": 0.6 + 0.02 * seed}
        metrics: dict[str, Any] = {
            "iteration": i,
            "mode": mode,
            "test": {"test": test, "gsm8k": {"accuracy": 0.02 * i}},
        }
        if i > 0:
            metrics |= {"temperature": 0.8 + 0.1 * seed, "threshold": 0.0}
            metrics["selected"] = {"size": 100 * i + seed, "accuracy": 1.0, "wrong_steps": 0.2, "balance_score": 0.3}
            metrics["selected"]["unique_correct_per_query"] = 1.5
            if mode == "bstar":
                metrics["search"] = {"threshold": 0.0, "balance_score": 0.4}
        (out / f"iter_{i:02d}").mkdir()
        (out / f"iter_{i:02d}" / "metrics.json").write_text(json.dumps(metrics))
    return out


def test_report_of_two_modes_over_three_seeds(tmp_path: Path) -> None:
    runs = [write_run(tmp_path / "runs", mode, seed) for mode in ("bstar", "online_rft") for seed in (2, 0, 1)]
    main(["report", *map(str, runs), "--out", str(tmp_path / "report")])
    report = (tmp_path / "report" / "report.md").read_text()
    for name in ("search", "test", "selected"):
        assert (tmp_path / "report" / f"{name}.png").read_bytes()[:8] == PNG
        assert f"]({name}.png)" in report
    assert not (tmp_path / "report" / "sampled.png").exists()  # greedy tables only: no sampled metrics
    assert "| iteration | bstar | online_rft |" in report
    # test accuracy at iteration 1: bstar 0.1 + 0.1 + {0, .01, .02}, online_rft 0.05 + 0.1 + {...}
    assert "| 1 | 0.210 ± 0.010 (n=3) | 0.160 ± 0.010 (n=3) |" in report
    assert "| 3 | 301.0 ± 1.0 (n=3) | 301.0 ± 1.0 (n=3) |" in report  # selected size 300 + seed
    assert "| 2 | 0.400 ± 0.000 (n=3) | – |" in report  # the search's balance score: B-STaR only
    assert "### gsm8k: greedy Pass@1" in report
    groups = group_runs([load_run(r) for r in runs])
    assert [g.label for g in groups] == ["bstar", "online_rft"]
    assert [r.config["seed"] for r in groups[0].runs] == [0, 1, 2]
    stats = series(groups[1], ("test", "test", "accuracy"))
    assert list(stats) == [0, 1, 2, 3]
    assert stats[3].mean == pytest.approx(0.36) and stats[3].std == pytest.approx(0.01)
    assert (stats[3].lo, stats[3].hi, stats[3].n) == (pytest.approx(0.35), pytest.approx(0.37), 3)
    assert series(groups[1], ("search", "balance_score")) == {}


def test_report_leads_with_pass_at_1_on_the_hard_levels(tmp_path: Path) -> None:
    """Pass@1 over levels 4 and 5 is their problem-weighted mean: (100 a + 300 b) / 400 per run."""
    runs = []
    for mode, seed in (("bstar", 0), ("bstar", 1), ("oracle", 0)):
        run = write_run(tmp_path / "runs", mode, seed, iterations=2)
        for i in range(3):
            path = run / f"iter_{i:02d}" / "metrics.json"
            metrics = json.loads(path.read_text())
            levels = {"3": (50, 0.9), "4": (100, 0.2 + 0.1 * i + 0.1 * seed), "5": (300, 0.1 + 0.1 * i)}
            rows = {k: {"problems": n, "accuracy": a} for k, (n, a) in levels.items()}
            metrics["test"]["test"]["by_level"] = rows
            path.write_text(json.dumps(metrics))
        runs.append(run)
    main(["report", *map(str, runs), "--out", str(tmp_path / "report"), "--hard_levels", "4", "5"])
    report = (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "hard_test.png").read_bytes()[:8] == PNG
    assert report.index("## test: greedy Pass@1 on levels 4, 5") < report.index("| group |")
    # iteration 2, seed 0: (100 * 0.4 + 300 * 0.3) / 400 = 0.325; seed 1: (100 * 0.5 + 90) / 400 = 0.35
    assert "| 2 | 0.338 ± 0.018 (n=2) | 0.325 (n=1) |" in report
    assert "gsm8k: greedy Pass@1 on level" not in report  # no levels there: no figure


def test_runs_in_progress_and_missing_keys(tmp_path: Path) -> None:
    whole = write_run(tmp_path, "bstar", 0)
    partial = write_run(tmp_path, "bstar", 1, done=1)
    (partial / "iter_02").mkdir()
    (partial / "iter_02" / "samples.jsonl").write_text("")  # an iteration under way: no metrics.json yet
    control = write_run(tmp_path, "control", 0)
    for i in range(4):  # the control mode's metrics hold only the selected size; one lacks its test row
        path = control / f"iter_{i:02d}" / "metrics.json"
        m = json.loads(path.read_text())
        m = {"iteration": i, "selected": {"size": 2000}} | ({"test": "not a table"} if i == 2 else {})
        path.write_text(json.dumps(m))
    assert len(load_run(partial).iterations) == 2 and not load_run(partial).complete and load_run(whole).complete
    out = tmp_path / "report"
    main(["report", str(whole), str(partial), str(control), "--out", str(out)])
    report = (out / "report.md").read_text()
    assert "| bstar | 1 | " in report and "| 1 of 3 (in progress) |" in report and "| 3 of 3 |" in report
    assert "| 1 | 0.205 ± 0.007 (n=2) | – |" in report  # iteration 1: both seeds
    assert "| 2 | 0.300 (n=1) | – |" in report  # iteration 2: the finished seed only
    assert "| 3 | 300.0 (n=1) | 2000.0 (n=1) |" in report  # selected size


def test_groups_sharing_a_mode_are_labelled_by_their_differences(tmp_path: Path) -> None:
    runs = [write_run(tmp_path / "a", "bstar", s) for s in (0, 1)]
    runs += [write_run(tmp_path / "b", "bstar", 0, config={"selection": {"n_target": 3200}, "train": {"lr": 1e-4}})]
    runs += [write_run(tmp_path / "c", "online_rft", 0)]
    labels = [g.label for g in group_runs([load_run(r) for r in runs])]
    assert labels == [
        "bstar (selection.n_target=1600, train.lr=-)",
        "bstar (selection.n_target=3200, train.lr=0.0001)",
        "online_rft",
    ]


def test_sampled_metrics_and_search_grid(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, "bstar", s, sampled=True) for s in (0, 1)]
    grid = {"temperature": 0.8, "threshold": 0.0, "balance_score": 0.4, "best": [1, 2], "temperatures": [0.6, 0.8]}
    grid |= {"thresholds": [-0.5, -0.25, 0.0], "scores": [[0.1, 0.2, 0.3], [0.2, 0.3, 0.4]]}
    for i in (1, 2, 3):
        (runs[0] / f"iter_{i:02d}" / "search.json").write_text(json.dumps(grid))
    main(["report", *map(str, runs), "--out", str(tmp_path / "report")])
    report = (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "sampled.png").read_bytes()[:8] == PNG
    assert (tmp_path / "report" / "search_grid_0.png").read_bytes()[:8] == PNG
    assert "### test: Pass@32-4" in report and "### test: Reward@32-4" in report and "### test: Pass@32" in report
    assert "| 0 | 0.505 ± 0.007 (n=2) |" in report  # Pass@32-4 of seeds 0 and 1
    assert "### test: PRM AUC within a problem" in report and "| 3 | 0.610 ± 0.014 (n=2) |" in report
    assert "Maj@" not in report and "random pick" not in report  # no run recorded these
    assert "iteration 3" in report


def test_the_fixed_pairs_balance_score_is_read_from_the_search_grid(tmp_path: Path) -> None:
    """Beside B-STaR's chosen cell, the score its own grid gave the fixed pair (t = 1.0, τ = 0.0 here)."""
    run = write_run(tmp_path, "bstar", 0, iterations=2)
    grid = {"temperature": 0.8, "threshold": 0.5, "balance_score": 0.9, "best": [0, 1], "temperatures": [0.8, 1.0]}
    grid |= {"thresholds": [0.0, 0.5], "scores": [[0.5, 0.9], [0.7, 0.6]]}
    (run / "iter_01" / "search.json").write_text(json.dumps(grid))
    (run / "iter_02" / "search.json").write_text(json.dumps(grid | {"temperatures": [0.6, 0.8]}))  # no 1.0
    record = load_run(run)
    assert record.iterations[1]["search"]["fixed_pair"] == 0.7
    assert "fixed_pair" not in record.iterations[2]["search"]
    main(["report", str(run), "--out", str(tmp_path / "report")])
    report = (tmp_path / "report" / "report.md").read_text()
    table = report.split("### balance score of the fixed pair")[1]
    assert "| 1 | 0.700 (n=1) |" in table and "| 2 |" not in table.split("###")[0]


def test_report_errors_name_the_directory(tmp_path: Path) -> None:
    good = write_run(tmp_path, "bstar", 0)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "report"
    with pytest.raises(SystemExit, match=r"empty: not a run directory \(no config.json\)"):
        main(["report", str(good), str(tmp_path / "empty"), "--out", str(out)])
    with pytest.raises(SystemExit, match=r"nowhere: no such run directory"):
        main(["report", str(tmp_path / "nowhere"), "--out", str(out)])
    (good / "iter_01" / "metrics.json").write_text('{"iteration": 1,\n oops}')
    with pytest.raises(SystemExit, match=r"iter_01/metrics.json:2: bad JSON"):
        main(["report", str(good), "--out", str(out)])
    assert not out.exists()
