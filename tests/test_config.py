"""The iterate config, its shared settings and the table of modes: every field that cannot work fails before any
work with a one-line error naming it, and every iterate YAML under configs/ passes `check` with stub paths."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
from jsonargparse import CLI

from bstar_pl.cli import main
from bstar_pl.config import Config, Data, Grid, Mode, Search, Selection, Train, check
from bstar_pl.modes import MODES
from bstar_pl.settings import ConfigError, EngineSettings, Reward, TestSet
from bstar_pl.tasks import arithmetic

ROOT = Path(__file__).resolve().parents[1]
ITERATE = sorted((ROOT / "configs" / "iterate").glob("*.yaml"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pool, an SFT file and a test file of a few arithmetic problems."""
    from bstar_pl.tasks.curriculum import write_splits

    out = tmp_path_factory.mktemp("data")
    write_splits(out, n_sft=10, n_pool=8, n_dev=2, n_test=4)
    return out


@pytest.fixture
def cfg(tiny_model_dir: Path, files: Path, tmp_path: Path) -> Config:
    tests = {"test": TestSet(files / "test.jsonl")}
    data = Data(task="arithmetic", pool=files / "pool.jsonl", tests=tests, sft=files / "sft.jsonl")
    return Config(out=tmp_path / "run", policy=tiny_model_dir, data=data)


def test_a_good_config_passes(cfg: Config) -> None:
    check(cfg)


def changed(cfg: Config, path: str, value: object) -> Config:
    """`cfg` with the field at the dotted `path` replaced."""
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    return dataclasses.replace(cfg, **{head: changed(getattr(cfg, head), rest, value)})


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("iterations", -1, "iterations"),
        ("data.task", "chess", "data.task"),
        ("data.pool", Path("/nonexistent/pool.jsonl"), "data.pool"),
        ("data.pool_size", 0, "data.pool_size"),
        ("data.tests", {"t": TestSet(Path("/nonexistent.jsonl"))}, "data.tests.t.path"),
        ("search.temperatures", Grid(-0.5, 1.0, 0.5), "search.temperatures"),
        ("search.thresholds", Grid(1.0, 0.0, 0.1), "search.thresholds"),
        ("search.budget", 0.0, "search.budget"),
        ("search.confidence", -1.0, "search.confidence"),
        ("selection.temperature", -1.0, "selection.temperature"),
        ("reward.aggregate", "prod", "reward.aggregate"),  # a product of clipped logits means nothing
        ("reward.prm", Path("/nonexistent"), "reward.prm"),
        ("reward.workers", -1, "reward.workers"),
        ("engine.max_new_tokens", 0, "engine.max_new_tokens"),
        ("engine.gpu_memory_utilization", 1.5, "engine.gpu_memory_utilization"),
        ("train.freeze_layers", -1, "train.freeze_layers"),
        ("train.replay", 1.0, "train.replay"),
        ("train.lr_min", 1.0, "train.lr_min"),
    ],
)
def test_a_field_that_cannot_work_is_named(cfg: Config, path: str, value: object, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^config field '{field}'"):
        check(changed(cfg, path, value))
    assert not cfg.out.exists()


def test_the_control_mode_and_replay_need_the_sft_data(cfg: Config) -> None:
    for bad in (changed(changed(cfg, "data.sft", None), "mode", "control"), changed(cfg, "data.sft", None)):
        bad = changed(bad, "train.replay", 0.0 if bad.mode == "control" else 0.5)
        with pytest.raises(ConfigError, match=r"config field 'data\.sft'"):
            check(bad)
    check(changed(cfg, "data.sft", None))  # B-STaR without replay reads no SFT data


def test_a_bad_config_ends_in_one_line_before_any_work(cfg: Config, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"out: {cfg.out}\npolicy: {cfg.policy}\niterations: -1\ndata: {{pool: {cfg.data.pool}}}\n")
    with pytest.raises(SystemExit) as exit_:
        main(["iterate", "--config", str(path)])
    assert str(exit_.value).startswith("error: config field 'iterations'") and "\n" not in str(exit_.value)
    assert not cfg.out.exists()


def test_every_mode_is_in_the_table() -> None:
    assert set(typing.get_args(Mode)) == set(MODES)
    assert [m for m, spec in MODES.items() if spec.searches] == ["bstar"]
    assert {m for m, spec in MODES.items() if not spec.samples} == {"control", "oracle"}
    assert [m for m, spec in MODES.items() if spec.restarts] == ["rest_em"]


def test_settings_shared_with_other_commands_have_one_default() -> None:
    """One declaration each: the iterate config holds the same dataclasses `evaluate` and `prm-data` take."""
    fields = {f.name: f.type for f in dataclasses.fields(Config)}
    assert (fields["engine"], fields["reward"]) == ("EngineSettings", "Reward")
    assert Config().engine == EngineSettings() and Config().reward == Reward()


@pytest.mark.parametrize("path", ITERATE, ids=lambda p: p.name)
def test_every_iterate_config_passes_check_with_stub_paths(path: Path, cfg: Config) -> None:
    """Each YAML as users run it, its files replaced by stubs that exist: every other field must pass `check`."""
    parsed = CLI(Config, args=["--config", str(path)], as_positional=False)
    stub_tests = {
        name: dataclasses.replace(t, path=cfg.data.tests["test"].path) for name, t in parsed.data.tests.items()
    }
    data = dataclasses.replace(parsed.data, pool=cfg.data.pool, search=None, tests=stub_tests, sft=cfg.data.sft)
    stub = dataclasses.replace(parsed, out=cfg.out, policy=cfg.policy, data=data)
    if stub.reward.prm is not None:
        stub = changed(stub, "reward.prm", cfg.policy)  # any model directory stands in for the PRM
    if stub.prompt.chat:
        stub = changed(stub, "prompt.chat", False)  # the stub policy has no chat template
    check(stub)
    assert stub.data.task in ("math", "arithmetic", "gsm8k") and stub.iterations >= 1


def test_search_selection_and_train_defaults_are_the_papers() -> None:
    assert (Search().samples, Search().temperatures.values()[0], Search().temperatures.values()[-1]) == (64, 0.5, 1.2)
    assert (Search().strategy, Search().confidence) == ("full", 0.0)
    assert len(Search().thresholds.values()) == 201 and Selection().n_target == 67_500
    assert (Train().steps, Train().lr, Train().lr_min, Train().weight_decay) == (500, 4.12e-6, 2e-7, 0.0)
    assert arithmetic.check_steps is not None  # the one task whose steps can be verified
