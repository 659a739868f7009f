"""Config files and `key=value` overrides: a wrong type or a repeated key is one line naming the key."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_shards_bad_input import one_line_error

ROOT = Path(__file__).resolve().parents[1]
B5 = ROOT / "launch" / "configs" / "b5_resnet18_scratch.yaml"
BASE = ["data.train=/nowhere", "model.encoder=small_cnn"]  # types are checked before any path


@pytest.mark.parametrize(
    "override,says",
    [
        ("data.augment.jitter_p=abc", "config data.augment.jitter_p=abc in the command line: takes a number"),
        (
            "data.augment.crop_scale=[0.5]",
            "data.augment.crop_scale=[0.5] in the command line: takes a list of 2 numbers",
        ),
        (
            "data.augment.crop_scale=abc",
            "data.augment.crop_scale=abc in the command line: takes a list of 2 numbers",
        ),
        ("data.augment.blur_p={a: 1}", 'data.augment.blur_p={"a": 1} in the command line: takes a number'),
        (
            "data.augment.solarize_threshold=1.5",
            "data.augment.solarize_threshold=1.5 in the command line: takes an integer",
        ),
        ("data.augment=5", "config data.augment=5 in the command line: takes a mapping"),
        ("epochs=abc", "config epochs=abc in the command line: takes an integer"),
        ("data=5", "config data=5 in the command line: takes a group of keys (train, fraction,"),
        ("optim.decay_epochs=abc", "optim.decay_epochs=abc in the command line: takes a list of integers"),
        ("data.size=[1,2]", "config data.size=[1, 2] in the command line: takes an integer"),
        ("cpu=maybe", "config cpu=maybe in the command line: takes true or false"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_key_and_its_type(tmp_path, run_cli, override, says):
    code, _, err = run_cli("pretrain", *BASE, f"run_dir={tmp_path}/run", override)
    assert says in one_line_error(code, err)
    assert not (tmp_path / "run").exists()


def test_wrong_types_in_a_yaml_an_experiment_file_and_its_overrides(tmp_path, run_cli):
    plain = tmp_path / "plain.yaml"
    plain.write_text("data:\n  train: /nowhere\n  augment:\n    crop_ratio: [0.75]\n")
    code, _, err = run_cli("pretrain", "--config", plain)
    assert f"data.augment.crop_ratio=[0.75] in {plain}: takes a list of 2 numbers" in one_line_error(
        code, err
    )

    experiment = tmp_path / "b5.yaml"
    experiment.write_text(B5.read_text().replace("temperature: 0.1", "temperature: low"))
    commands = (["run"], ["pretrain"], ["sweep", "--grid", "model.head=[linear,mlp_bn]"])
    for command in commands:
        code, _, err = run_cli(*command, "--config", experiment, f"runs={tmp_path}/runs")
        assert "config temperature=low in step pretrain: takes a number" in one_line_error(code, err)
    for command in commands:
        code, _, err = run_cli(*command, "--config", B5, f"runs={tmp_path}/runs", "data.augment.gray_p=[1]")
        assert "data.augment.gray_p=[1] in step pretrain: takes a number" in one_line_error(code, err)
    assert not (tmp_path / "runs").exists()


def test_a_key_given_twice_in_a_yaml_file_is_named_with_its_line(tmp_path, run_cli):
    path = tmp_path / "dup.yaml"
    path.write_text("epochs: 3\noptim:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.2\n")
    for command in ("pretrain", "run", "sweep"):
        code, _, err = run_cli(command, "--config", path)
        assert f"config {path}: not plain YAML (line 5: key 'lr' is given twice; keep one)" in one_line_error(
            code, err
        )


def _modules_after(*argv: str) -> set[str]:
    """The heavy modules a fresh `python -m fastclr ARGV` has imported once it exits."""
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['fastclr', *{list(argv)!r}]\n"
        "try:\n    runpy.run_module('fastclr', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = ('torch', 'nvidia.dali', 'timm', 'accelerate')\n"
        "print('\\n' + __import__('json').dumps(sorted(m for m in sys.modules if m in heavy)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert "usage: fastclr" in done.stdout
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "argv", [["--help"], ["knn", "--help"], ["pretrain", "--help"], ["shards", "convert", "--help"]]
)
def test_help_imports_no_torch_dali_timm_or_accelerate(argv):
    assert _modules_after(*argv) == set()


def test_choices_named_in_the_settings_are_the_modules_that_own_them():
    """The settings spell their choices so `--help` imports no torch; they must stay the owners'."""
    from fastclr import encoders, pipelines, trainers
    from fastclr.trainers import _config

    def choices(schema, key):
        from fastclr.config import fields

        return next(f.choices for f in fields(schema) if f.key == key)

    pairs = [
        (choices(trainers.KnnConfig, "vote"), trainers.KNN_VOTES),
        (_config.DTYPES, tuple(trainers.INPUT_DTYPE)),
        (_config.OPTIMIZERS, trainers.OPTIMIZERS),
        (_config.LR_SCALING, trainers.LR_SCALING),
        (_config.SCHEDULES, trainers.SCHEDULES),
        (_config.COMPILE_MODES, trainers.COMPILE_MODES),
        (_config.HEADS, encoders.HEADS),
        (_config.PRESETS, tuple(pipelines.PRESETS)),
        (_config.AUGMENT_DEVICES, pipelines.AUGMENT_DEVICES),
    ]
    for named, owned in pairs:
        assert tuple(named) == tuple(owned)


def test_a_plain_pretrain_config_is_parsed_once(tmp_path, monkeypatch):
    from fastclr.launch import _config, _experiment

    calls = []
    real = _config.read_yaml
    monkeypatch.setattr(_experiment, "read_yaml", lambda path: calls.append(path) or real(path))
    path = tmp_path / "p.yaml"
    path.write_text("data:\n  train: /nowhere\nmodel:\n  encoder: small_cnn\n")
    assert _experiment.load_pretrain(str(path), []).data.train == "/nowhere"
    assert calls == [str(path)]


CONFIGS = sorted((ROOT / "launch" / "configs").glob("*.yaml"))


def _shard_folders(value) -> set[str]:
    """Every `shards/<name>` an experiment's resolved steps read (the default data root is `shards`)."""
    if isinstance(value, dict):
        return set().union(*(_shard_folders(v) for v in value.values()))
    if isinstance(value, str) and value.startswith("shards/"):
        return {value}
    return set()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_header_says_how_to_make_each_shard_folder_it_reads(path):
    import shlex

    from fastclr.launch import _experiment as experiment
    from fastclr.launch.cli import parse

    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# ").strip())
    made = {}
    for line in header:
        if line.startswith("fastclr shards convert "):
            _, settings = parse(shlex.split(line)[1:])  # a command a user can paste
            made[settings.out] = settings
    reads = _shard_folders(experiment.resolve(experiment.load_experiment(str(path)))["steps"])
    assert reads, "every experiment reads some shards"
    missing = sorted(reads - set(made))
    assert not missing, f"{path.name}: no `fastclr shards convert ... --out X` in its header for {missing}"


def test_wrong_types_at_the_top_of_an_experiment_file_or_its_overrides(tmp_path, run_cli):
    for override, says in [("runs={a: 1}", 'config runs={"a": 1} in the command line: takes text')]:
        code, _, err = run_cli("run", "--config", B5, override)
        assert says in one_line_error(code, err)
    path = tmp_path / "x.yaml"
    for text, says in [
        ("name: x\nsteps: 5\n", "steps=5"),
        ("name: x\ngrid: [1]\nsteps: {a: {}}\n", "grid=[1]"),
    ]:
        path.write_text(text)
        code, _, err = run_cli("run", "--config", path)
        assert f"config {says} in {path}: takes a mapping" in one_line_error(code, err)


def test_an_override_naming_a_path_that_is_not_utf8_is_one_line(tmp_path, run_cli):
    import os

    folder = os.fsdecode(bytes(tmp_path) + b"/d\xe9ta")
    for argv in (["pretrain", f"data.train={folder}"], ["run", "--config", B5, f"runs={folder}"]):
        code, _, err = run_cli(*argv)
        assert "is not valid UTF-8 (a file name's bytes?)" in one_line_error(code, err)
    assert os.listdir(tmp_path) == []


def test_precision_auto_and_a_null_warm_up_resolve_by_device_and_run_length():
    from fastclr.trainers import PretrainConfig

    cfg = PretrainConfig(epochs=30)
    assert (cfg.precision, cfg.optim.warmup_epochs) == ("auto", None)
    on_cpu, on_gpu = cfg.resolved(cuda=False), cfg.resolved(cuda=True)
    assert (on_cpu.precision, on_gpu.precision) == ("fp32", "bf16")
    assert on_cpu.optim.warmup_epochs == on_gpu.optim.warmup_epochs == 3
    cfg.precision, cfg.optim.warmup_epochs = "fp16", 0
    assert (cfg.resolved(cuda=False).precision, cfg.resolved(cuda=False).optim.warmup_epochs) == ("fp16", 0)
