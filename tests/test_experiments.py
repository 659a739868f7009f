"""Experiment configs, `fastclr run` and `fastclr sweep`, launch configs for many GPUs and nodes."""

import copy
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
from datasets import write_synthetic_shards
from safetensors.torch import load_file

from fastclr import shards, trainers
from fastclr.launch import _experiment as experiment
from fastclr.launch._commands import commands
from fastclr.launch._config import ConfigError
from fastclr.launch._sweep import parse_grid
from fastclr.launch.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "launch" / "configs").glob("*.yaml"))
ROWS = [f"A{i}" for i in range(1, 4)] + [f"B{i}" for i in range(1, 8)] + [f"C{i}" for i in range(1, 7)]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_and_validates_at_every_grid_point(path):
    config = experiment.load_experiment(str(path))
    assert config.name == path.stem, "a config's name is its file name, so runs/<name> is predictable"
    grid = parse_grid(config, []) if config.grid else {}
    points = [{}] + [{key: value} for key, values in grid.items() for value in values]
    for point in points:
        at_point = copy.deepcopy(config)
        experiment.set_values(at_point, point)
        steps = experiment.build_steps(at_point, check_paths=False)
        assert steps
        for step in steps:
            assert isinstance(step.config, commands()[step.command].settings)
            if step.command == "pretrain":  # the recipes keep the values they had before auto and null
                assert step.config.precision in ("bf16", "fp32"), "a recipe names its precision"
                assert step.config.optim.warmup_epochs is not None, "a recipe names its warm-up"


def test_every_experiment_row_has_a_config():
    rows = {experiment.load_experiment(str(p)).reproduces for p in CONFIGS}
    assert set(ROWS) <= rows
    assert (ROOT / "launch" / "configs" / "simclr_cifar10_resnet18.yaml").is_file()


def test_a_config_typo_fails_before_anything_runs(tmp_path):
    base = (ROOT / "launch" / "configs" / "b5_resnet18_scratch.yaml").read_text()
    cases = [
        ("    temperature: 0.1", "    temprature: 0.1", "temprature"),
        ("    mode: augmented", "    moed: augmented", "unknown config key 'moed' in step linear"),
        (
            "    mode: augmented",
            "    mode: frozen",
            "step linear: config mode='frozen' is not valid; choose one of: cached, augmented",
        ),
        ("reproduces: B5", "reproduce: B5", "reproduce"),
    ]
    for old, new, message in cases:
        path = tmp_path / "typo.yaml"
        path.write_text(base.replace(old, new))
        with pytest.raises(ConfigError, match=re.escape(message)):
            experiment.build_steps(experiment.load_experiment(str(path)), check_paths=False)


def test_overrides_land_in_the_pretrain_step_a_named_step_or_the_top():
    config = experiment.load_experiment(
        str(ROOT / "launch" / "configs" / "b5_resnet18_scratch.yaml"),
        ["model.head=linear", "linear.epochs=3", "runs=/tmp/elsewhere", "optim.lr=0.5"],
    )
    resolved = experiment.resolve(config)
    assert resolved["steps"]["pretrain"]["model"]["head"] == "linear"
    assert resolved["steps"]["pretrain"]["optim"]["lr"] == 0.5
    assert resolved["steps"]["linear"]["epochs"] == 3
    assert resolved["steps"]["pretrain"]["run_dir"] == "/tmp/elsewhere/pretrain"
    with pytest.raises(ConfigError, match="names no step or setting"):
        experiment.load_experiment(str(ROOT / "launch" / "configs" / "b5_resnet18_scratch.yaml"), ["nope=1"])


@pytest.mark.parametrize("name,processes,machines", [("1gpu", 1, 1), ("8gpu", 8, 1), ("2nodes", 16, 2)])
def test_accelerate_configs_parse(name, processes, machines):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = ROOT / "launch" / "accelerate" / f"{name}.yaml"
    config = load_config_from_file(str(path))  # refuses keys it does not know
    assert (config.num_processes, config.num_machines) == (processes, machines)
    args = launch_command_parser().parse_args(
        ["--config_file", str(path), "-m", "fastclr", "run", "--config", "x.yaml"]
    )
    args = _validate_launch_command(args)[0]
    assert args.num_processes == processes and args.multi_gpu == (processes > 1)
    assert args.module and args.training_script == "fastclr"


def test_slurm_script_starts_one_launch_per_node_with_its_rank_and_the_main_address(tmp_path):
    """Fake srun/scontrol/accelerate: srun runs the node command once per node, as Slurm would."""
    bin_dir, log = tmp_path / "bin", tmp_path / "launches.log"
    bin_dir.mkdir()
    fakes = {
        "scontrol": 'printf "gpu-a17\\ngpu-a18\\n"',
        "srun": 'shift; for node in 0 1; do SLURM_NODEID=$node "$@"; done',
        "accelerate": f'echo "$*" >> {log}',
    }
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "gpu-a[17-18]",
        "SLURM_JOB_NUM_NODES": "2",
    }
    subprocess.run(
        ["bash", str(ROOT / "launch" / "slurm" / "pretrain.sbatch"), "my config.yaml", "data=/mnt/shards"],
        env=env,
        check=True,
        cwd=tmp_path,
    )
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    for rank, line in enumerate(lines):
        assert f"--machine_rank {rank} " in line
        assert "--main_process_ip gpu-a17 " in line and "--num_processes 16 " in line
        assert line.endswith("-m fastclr run --config my config.yaml data=/mnt/shards")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_shards(tmp_path_factory.mktemp("shards"), train=64, test=32)


def write_experiment(folder: Path, data: Path) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(
        f"""
name: tiny
reproduces: test
reported: n/a
data: {data}
runs: {folder}/runs
grid:
  model.head: [mlp_bn, linear]
steps:
  pretrain:
    run_dir: ${{runs}}/pretrain
    epochs: 1
    batch_size: 16
    precision: fp32
    cpu: true
    data: {{train: "${{data}}/train", size: 16, num_threads: 1}}
    model: {{encoder: small_cnn, hidden_dim: 32, out_dim: 16}}
    optim: {{name: adam, lr: 1.0e-3, lr_scaling: none, warmup_epochs: 0}}
    track: {{progress: false, log_every: 1}}
  linear:
    encoder: ${{steps.pretrain.run_dir}}
    train: ${{data}}/train
    val: ${{data}}/test
    out: ${{runs}}/linear
    epochs: 20
    cpu: true
"""
    )
    return path


def test_two_point_sweep_writes_results_and_resumes_without_recomputing(data, tmp_path, monkeypatch, capsys):
    config = write_experiment(tmp_path, data)
    out = tmp_path / "sweep"
    assert main(["sweep", "--config", str(config), "--eval", "linear", "--out", str(out)]) == 0
    text = (out / "results.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| mlp_bn") or line.startswith("| linear")]
    assert len(rows) == 2, text
    assert "linear top-1" in text and "pretrain loss" in text
    assert (out / "sweep.png").is_file() and (out / "loss.png").is_file()
    for head in ("mlp_bn", "linear"):
        point = out / f"model.head={head}"
        record = json.loads((point / "experiment.json").read_text())
        assert set(record["steps"]) == {"pretrain", "linear"}
        assert record["steps"]["pretrain"]["settings"]["model"]["head"] == head
        assert json.loads((point / "pretrain" / "encoder.json").read_text())["encoder"] == "small_cnn"
    steps = experiment.build_steps(experiment.load_experiment(str(config), [f"runs={out}/x"]))
    assert steps[0].config.track.name == "x-pretrain"  # tracker runs named per point, not all "pretrain"
    figures = json.loads((out / "sweep.json").read_text())["points"]
    assert figures[0]["figures"]["linear top-1"] == pytest.approx(
        json.loads((out / "model.head=mlp_bn" / "linear" / "results.json").read_text())["top1"]
    )

    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "results.md").read_text()
    top1 = figures[0]["figures"]["linear top-1"]
    assert f"| tiny (model.head=mlp_bn) | test | n/a | linear {top1:.2%} |" in report

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished point was recomputed")

    monkeypatch.setattr(trainers, "pretrain", must_not_run)
    monkeypatch.setattr(trainers, "linear", must_not_run)
    before = (out / "results.md").read_text()
    assert main(["sweep", "--config", str(config), "--eval", "linear", "--out", str(out)]) == 0
    assert (out / "results.md").read_text().split("Measured on")[1] == before.split("Measured on")[1]
    assert "done already" in capsys.readouterr().out
    # Other settings for a finished step are refused, not mixed into its results.
    assert (
        main(["sweep", "--config", str(config), "--eval", "linear", "--out", str(out), "linear.epochs=5"])
        == 1
    )
    assert "finished with other settings (epochs differ)" in capsys.readouterr().err


def test_run_resumes_an_experiment_stopped_between_steps(data, tmp_path, monkeypatch):
    config = write_experiment(tmp_path, data)
    assert main(["run", "--config", str(config), "--step", "pretrain"]) == 0
    record = json.loads((tmp_path / "runs" / "experiment.json").read_text())
    assert set(record["steps"]) == {"pretrain"}
    monkeypatch.setattr(trainers, "pretrain", lambda *a: pytest.fail("pretrain ran twice"))
    assert main(["run", "--config", str(config)]) == 0
    record = json.loads((tmp_path / "runs" / "experiment.json").read_text())
    assert record["steps"]["linear"]["result"]["top1"] >= 0 and record["reproduces"] == "test"


def test_pretrain_command_reads_an_experiment_file(data, tmp_path):
    config = write_experiment(tmp_path, data)
    assert main(["pretrain", "--config", str(config), "runs=" + str(tmp_path / "other"), "epochs=1"]) == 0
    assert (tmp_path / "other" / "pretrain" / "encoder.safetensors").is_file()


def test_data_fraction_pretrains_on_a_stratified_subset_and_keeps_it(data, tmp_path, capsys):
    config = write_experiment(tmp_path, data)
    args = ["pretrain", "--config", str(config), "data.fraction=0.5", "batch_size=8"]
    assert main(args) == 0
    subset = shards.load_manifest(tmp_path / "runs" / "pretrain" / "train-0.5")
    assert subset["num_samples"] == 32 and subset["subset"]["fraction"] == 0.5
    full = shards.load_manifest(data / "train")["class_counts"]
    assert subset["class_counts"] == [int(n * 0.5 + 0.5) for n in full]  # stratified
    steps = [json.loads(line) for line in (tmp_path / "runs/pretrain/metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in steps) == 32 // 8  # one epoch of the subset, not of all 64
    # The same run directory with another fraction would train on other data: refused.
    assert main([*args[:3], "data.fraction=0.25", "batch_size=8", "epochs=2"]) == 1
    assert "data.fraction" in capsys.readouterr().err


def test_step_schedule_drops_the_rate_at_the_decay_epochs():
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(params, lr=1.0)
    steps_per_epoch = 10
    scheduler = trainers.create_scheduler(
        optimizer, 40 * steps_per_epoch, 0, 0.0, "step", [20 * steps_per_epoch, 30 * steps_per_epoch], 0.1
    )
    rates = {}
    for step in (0, 199, 200, 299, 300, 399):
        scheduler.step_update(step)  # the rate of optimiser step `step` (0-based)
        rates[step] = optimizer.param_groups[0]["lr"]
    assert rates[0] == rates[199] == 1.0
    assert rates[200] == rates[299] == pytest.approx(0.1)
    assert rates[300] == rates[399] == pytest.approx(0.01)


def test_supervised_decay_epochs_steps_the_rate(data, tmp_path):
    result = trainers.supervised(trainers.SupervisedConfig(
        model="small_cnn", train=str(data / "train"), val=str(data / "test"), out=str(tmp_path), size=16,
        epochs=3, lr=0.1, batch_size=16, decay_epochs=[1, 2], cpu=True,
    ))  # fmt: skip
    assert result["top1"] >= 0
    rates = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rates == pytest.approx([0.1, 0.01, 0.001])


def test_import_weights_makes_an_encoder_the_evaluations_load(tmp_path):
    from fastclr.encoders import build_encoder

    source = build_encoder("resnet18")  # stands in for an ImageNet file (nothing is downloaded)
    torch.save(source.state_dict(), tmp_path / "resnet18-imagenet.pth")
    out = tmp_path / "imagenet-resnet18"
    argv = ["import-weights", "--model", "resnet18", "--file", str(tmp_path / "resnet18-imagenet.pth")]
    assert main([*argv, "--size", "64", "--out", str(out)]) == 0
    encoder, info = trainers.load_encoder(out)
    assert info["image_size"] == 64 and info["encoder"] == "resnet18"
    saved = load_file(out / "encoder.safetensors")
    for key, value in source.state_dict().items():
        assert torch.equal(saved[key], value), key
    assert torch.equal(encoder.state_dict()["conv1.weight"], source.state_dict()["conv1.weight"])


def test_an_experiment_file_with_a_python_tag_is_refused_unconstructed(tmp_path, capsys):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\nsteps: {{}}\n')
    for command in ("run", "sweep", "pretrain"):
        assert main([command, "--config", str(path)]) == 1
        assert "not plain YAML" in capsys.readouterr().err
    assert not marker.exists()


def test_the_recipe_gives_time_to_accuracy_its_pretrain_config(data, tmp_path):
    """bench/time_to_accuracy.py and `fastclr pretrain` read the recipe's pretrain step, with overrides."""
    cfg = experiment.load_pretrain(
        str(ROOT / "launch" / "configs" / "simclr_cifar10_resnet18.yaml"),
        [f"data.train={data}/train", "data.knn_bank=null", "data.knn_val=null", f"run_dir={tmp_path}/r"],
    )
    assert (cfg.optim.name, cfg.batch_size, cfg.precision, cfg.channels_last) == ("lars", 512, "bf16", True)
    assert cfg.run_dir == f"{tmp_path}/r" and cfg.data.knn_bank is None and cfg.temperature == 0.2


def test_a_rank_that_cannot_see_rank_0s_metrics_still_records_the_step(tmp_path):
    """On several nodes without shared storage only rank 0 has metrics.jsonl; the others must not fail."""
    assert experiment._pretrain_result(tmp_path) == {"epochs": 0, "loss": None}
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 3, "epoch": 0, "epoch_loss": 2.5, "knn_accuracy": 0.4}\n'
    )
    assert experiment._pretrain_result(tmp_path) == {"epochs": 1, "loss": 2.5, "knn": 0.4}
