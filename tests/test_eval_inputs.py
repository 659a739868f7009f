"""Evaluations check every input before any model is built or feature extracted, and show progress."""

import dataclasses

import numpy as np
import pytest
from datasets import write_imagefolder
from test_eval import run  # noqa: F401 - the module's tiny pretrain run and shards
from test_shards_bad_input import one_line_error

from fastclr import shards
from fastclr.trainers import _classify, _cluster, _eval


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if an evaluation gets as far as building a data loader."""

    def refuse(*args, **kwargs):
        raise AssertionError("a loader was built before the inputs were checked")

    for module in (_eval, _classify, _cluster):
        monkeypatch.setattr(module, "create_loader", refuse)


@pytest.fixture(scope="module")
def bad(run, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("bad")
    write_imagefolder(root / "photos", per_class=1)
    source = shards.open_source("synthetic", None, "unlabeled", num=20, size=16, classes=4)
    shards.convert(source, root / "unlabelled", progress=False)
    (root / "a-file").write_text("not a folder")
    # the module's 4 classes in 1-channel images: only the channel count is wrong
    gray = np.random.default_rng(0).integers(0, 256, (8, 16, 16), dtype=np.uint8)
    names = [f"class_{c}" for c in range(4)]
    np.savez(root / "gray.npz", images=gray, labels=np.arange(8) % 4, class_names=names)
    shards.convert(shards.open_source("npz", root / "gray.npz", "test"), root / "gray", progress=False)
    return {
        "missing": (root / "nowhere", "no such shard folder"),
        "image-folder": (root / "photos", "holds image files, not shards"),
        "other-classes": (run / "other", "hold other classes: 4 classes in"),
        "gray": (root / "gray", "holds 1-channel images, but"),
        "unlabelled": (root / "unlabelled", "unlabelled shards cannot be evaluated"),
        "out-is-a-file": (root / "a-file", "is a file, not a folder"),
    }


def commands(run, val, out):  # noqa: F811
    common = ["--train", run / "train", "--val", val, "--out", out, "--epochs", 1]
    return {
        "linear": ["linear", "--encoder", run / "run", *common, "--label-fraction", 0.5],
        "knn": ["knn", "--encoder", run / "run", "--train", run / "train", "--val", val, "--out", out],
        "finetune": ["finetune", "--encoder", run / "run", *common],
        "supervised": ["supervised", "--model", "small_cnn", "--size", 16, *common],
        "cluster": ["cluster", "--data", val, "--out", out],
        "evaluate": ["evaluate", "--model", run / "no-model-yet", "--val", val, "--out", out],
    }


CASES = [
    (command, case)
    for command in ("linear", "knn", "finetune", "supervised", "cluster", "evaluate")
    for case in ("missing", "image-folder", "other-classes", "gray", "unlabelled", "out-is-a-file")
    if not (case == "other-classes" and command in ("cluster", "evaluate"))  # they read one shard set
    and not (case == "gray" and command in ("cluster", "evaluate"))  # no model / one made below
]


@pytest.mark.parametrize("command,case", CASES)
def test_a_bad_input_is_refused_before_any_work(run, bad, tmp_path, run_cli, no_work, command, case):  # noqa: F811
    path, says = bad[case]
    val, out = (run / "test", path) if case == "out-is-a-file" else (path, tmp_path / "out")
    code, _, err = run_cli(*commands(run, val, out)[command])
    assert says in one_line_error(code, err)
    assert not (tmp_path / "out").exists()  # nothing written, no label subset made


def test_a_missing_encoder_is_named_before_any_work(run, tmp_path, run_cli, no_work):  # noqa: F811
    for command in ("linear", "knn", "finetune"):
        argv = commands(run, run / "test", tmp_path / "out")[command]
        argv[argv.index("--encoder") + 1] = tmp_path / "no-run"
        code, _, err = run_cli(*argv)
        assert f"{tmp_path / 'no-run'}: not found" in one_line_error(code, err)


def test_evaluations_show_progress_as_plain_lines_off_a_terminal(run, tmp_path, run_cli):  # noqa: F811
    code, _, err = run_cli(
        "linear",
        "--encoder",
        run / "run",
        "--train",
        run / "train",
        "--val",
        run / "test",
        "--out",
        tmp_path / "linear",
        "--epochs",
        20,
    )
    assert code == 0, err
    assert "\r" not in err
    for bar in (
        f"features of {run / 'train'}: 100%",
        f"features of {run / 'test'}: 100%",
        "linear probe: 100%",
    ):
        assert bar in err, err
    argv = ["--encoder", run / "run", "--train", run / "train", "--val", run / "test", "--batch-size", 16]
    code, _, err = run_cli("finetune", *argv, "--out", tmp_path / "ft", "--epochs", 2)
    assert code == 0 and "\r" not in err and "epochs: 100%|##########| 2/2" in err, err


SETTINGS = [  # (command, option, value, what the one line says)
    ("knn", "--k", 0, "config k=0 must be at least 1"),
    ("knn", "--temperature", 0, "config temperature=0.0 must be above 0"),
    ("linear", "--label-fraction", 1.5, "config label_fraction=1.5 out of range"),
    ("linear", "--lr", -1, "config lr=-1.0 must be above 0"),
    ("finetune", "--decay-epochs", "3 2", "config decay_epochs=[3, 2] must be rising epochs"),
    ("supervised", "--label-smoothing", 1, "config label_smoothing=1.0 out of range"),
    ("supervised", "--epochs", 0, "config epochs=0 must be at least 1"),
    ("cluster", "--batch-size", 0, "config batch_size=0 must be at least 1"),
]


@pytest.mark.parametrize("command,option,value,says", SETTINGS)
def test_a_setting_out_of_range_is_refused_first(
    run,  # noqa: F811
    tmp_path,
    run_cli,
    no_work,
    command,
    option,
    value,
    says,
):
    argv = commands(run, run / "test", tmp_path / "out")[command]
    code, _, err = run_cli(*argv, option, *str(value).split())
    assert says in one_line_error(code, err)
    assert not (tmp_path / "out").exists()


def test_import_weights_refuses_a_channel_count_of_zero(tmp_path, run_cli):
    argv = ["import-weights", "--model", "small_cnn", "--file", tmp_path / "w.pth", "--size", 16]
    code, _, err = run_cli(*argv, "--channels", 0, "--out", tmp_path / "out")
    assert "config channels=0 must be at least 1" in one_line_error(code, err)


def test_options_left_out_take_the_dataclass_defaults():
    from fastclr.launch.cli import parse

    required = {"encoder": "e", "train": "t", "val": "v", "out": "o", "data": "d", "model": "m", "size": "16"}
    from fastclr.launch._commands import get

    for name in ("linear", "knn", "cluster", "finetune", "supervised", "evaluate", "import-weights"):
        schema = get(name).settings
        given = {f.name: required[f.name] for f in dataclasses.fields(schema) if f.name in required}
        if "file" in {f.name for f in dataclasses.fields(schema)}:
            given["file"] = "w.pth"
        _, cfg = parse([name, *(a for k, v in given.items() for a in (f"--{k}", v))])
        assert cfg == schema(**{k: int(v) if k == "size" else v for k, v in given.items()}), name


def test_the_linear_learning_rate_follows_the_mode_unless_given():
    from fastclr.trainers import LinearConfig

    inputs = dict(encoder="e", train="t", val="v", out="o")
    assert LinearConfig(**inputs).learning_rate() == 0.01
    assert LinearConfig(**inputs, mode="augmented").learning_rate() == 0.1
    assert LinearConfig(**inputs, mode="augmented", lr=0.3).learning_rate() == 0.3
