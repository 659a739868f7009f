"""The command line: every spelling of a setting gives the same settings object; help and docs list them."""

import pytest
from test_shards_bad_input import one_line_error

from fastclr.config import fields
from fastclr.launch import docs
from fastclr.launch._arguments import flag
from fastclr.launch._commands import commands
from fastclr.launch.cli import parse

TRAIN = ["data.train=/shards", "model.encoder=small_cnn"]


@pytest.mark.parametrize(
    "spellings",
    [
        (["--cpu"], ["cpu=true"], ["cpu=yes"]),
        (["--no-sync-bn"], ["sync_bn=false"], ["--no-sync_bn"]),
        (["--optim.lr", "0.5"], ["--optim.lr=0.5"], ["optim.lr=0.5"]),
        (["--batch_size", "8"], ["--batch-size", "8"], ["batch_size=8"], ["batch-size=8"]),
        (
            ["--optim.schedule", "step", "--optim.decay-epochs", "30", "60"],
            ["optim.schedule=step", "optim.decay_epochs=[30,60]"],
            ["--optim.decay_epochs", "30", "60", "--optim.schedule=step"],
        ),
        (["--data.knn-bank", "null", "--data.augment.jitter_p", "0.5"], ["data.augment={jitter_p: 0.5}"]),
        (["--track.tags", "a", "b"], ["track.tags=[a,b]"]),
    ],
)
def test_every_spelling_of_a_pretrain_setting_gives_the_same_config(spellings):
    configs = [parse(["pretrain", *TRAIN, *spelling])[1] for spelling in spellings]
    assert all(cfg == configs[0] for cfg in configs), spellings
    assert configs[0] != parse(["pretrain", *TRAIN])[1]  # the setting took effect


def test_evaluation_and_shards_commands_take_both_spellings_and_their_positionals():
    argv = ["--encoder", "e", "--train", "t", "--val", "v", "--out", "o"]
    linear = parse(["linear", *argv, "--cpu", "--label-fraction", "0.1"])[1]
    dotted = [f"{name[2:]}={value}" for name, value in zip(argv[::2], argv[1::2], strict=True)]
    assert linear == parse(["linear", *dotted, "cpu=true", "label-fraction=0.1"])[1]
    assert (linear.cpu, linear.label_fraction, linear.lr) == (True, 0.1, None)
    for spelling in (["DIR"], ["dir=DIR"], ["--dir", "DIR"]):
        assert parse(["shards", "verify", *spelling, "--no-decode"])[1].dir == "DIR"
    convert = parse(["shards", "convert", "synthetic", "--out", "o", "--no-shuffle", "--quiet"])[1]
    assert (convert.source, convert.shuffle, convert.quiet, convert.quality) == ("synthetic", False, True, 95)
    report = parse(["report", "runs/a", "model.head=linear", "--out", "r"])[1]  # a sweep point's folder
    assert report.dirs == ["runs/a", "model.head=linear"] and report.out == "r"


def test_run_and_sweep_keep_their_repeated_flags_and_take_experiment_keys_both_ways():
    run = parse(["run", "--config", "x.yaml", "--step", "a", "runs=r", "--step", "b", "--optim.lr", "0.5"])[1]
    assert run.step == ["a", "b"] and run.overrides == ["runs=r", "optim.lr=0.5"]
    sweep = parse(
        ["sweep", "--config", "x.yaml", "--grid", "model.head=[a,b]", "--eval", "linear", "epochs=1"]
    )
    assert sweep[1].grid == ["model.head=[a,b]"] and sweep[1].eval == ["linear"]
    assert sweep[1].overrides == ["epochs=1"]


@pytest.mark.parametrize(
    "argv,says",
    [
        (
            ["pretrain", *TRAIN, "--optim.lrr", "0.1"],
            "unknown config key 'optim.lrr' in the command line; valid",
        ),
        (
            ["knn", "--kk", "3"],
            "unknown config key 'kk' in the command line; valid keys here: encoder, train",
        ),
        (["pretrain", *TRAIN, "--epochs", "abc"], "config epochs=abc in the command line: takes an integer"),
        (["pretrain", *TRAIN, "--epochs"], "fastclr pretrain: argument --epochs: expected one argument"),
        (["pretrain", *TRAIN, "stray"], "fastclr pretrain: unexpected argument 'stray'"),
        (
            ["linear", "--mode", "frozen"],
            "config mode='frozen' is not valid; choose one of: cached, augmented",
        ),
        (["shards", "verify"], "config dir is required"),
        (["nosuch"], "invalid choice: 'nosuch'"),
    ],
)
def test_a_bad_command_line_is_one_line(run_cli, argv, says):
    if argv[0] == "linear":
        argv += ["--encoder", "e", "--train", "t", "--val", "v", "--out", "o"]
    code, _, err = run_cli(*argv)
    assert says in one_line_error(code, err)


def test_a_yaml_set_tag_or_an_unset_environment_variable_is_one_line(tmp_path, run_cli, monkeypatch):
    monkeypatch.delenv("FASTCLR_NO_SUCH_VARIABLE", raising=False)
    tagged = tmp_path / "set.yaml"
    tagged.write_text("data:\n  train: !!set {a, b}\n")
    code, _, err = run_cli("pretrain", "--config", tagged)
    assert f"config {tagged}: not plain YAML (data.train: " in one_line_error(code, err)
    unset = tmp_path / "env.yaml"
    unset.write_text("data:\n  train: ${oc.env:FASTCLR_NO_SUCH_VARIABLE}\n")
    code, _, err = run_cli("pretrain", "--config", unset)
    line = one_line_error(code, err)
    assert "config data.train=${oc.env:FASTCLR_NO_SUCH_VARIABLE}: cannot be resolved (Environment" in line
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("name: x\nruns: ${oc.env:FASTCLR_NO_SUCH_VARIABLE}\nsteps: {knn: {k: 3}}\n")
    code, _, err = run_cli("run", "--config", experiment)
    assert "FASTCLR_NO_SUCH_VARIABLE" in one_line_error(code, err)


@pytest.mark.parametrize("name", list(commands()))
def test_help_lists_every_setting_with_its_type_and_default(run_cli, name):
    code, out, _ = run_cli(*name.split(), "--help")
    assert code == 0 and out.startswith(f"usage: fastclr {name}")

    def plain(text):  # argparse wraps lines, also at a word's hyphen
        return " ".join(text.split()).replace("- ", "-")

    text = plain(out)
    for f in fields(commands()[name].settings):
        assert flag(f.key) in text, f.key
        assert f.help.strip(), f"{name} --{f.key} has no help text"
        shown = "required" if f.required else f"default: {'null' if f.default is None else ''}"
        assert plain(f"{f.help} ({f.type}; {shown}") in text, f.key


def test_pretrain_help_groups_its_keys():
    from fastclr.launch._arguments import command_parser

    text = command_parser(commands()["pretrain"]).format_help()
    for group, key in [("data:", "--data.augment-device"), ("optim:", "--optim.warmup-epochs")]:
        assert text.index(group) < text.index(key)


def test_the_committed_config_reference_is_what_the_dataclasses_generate():
    assert docs.PATH.read_text() == docs.render(), "run python -m fastclr.launch.docs"
