"""Files and data that lie, and runs that mean nothing: each is refused in one line naming the file
and the fix (exit 1), or handled and said in one line; never a traceback, nothing silently skipped."""

import io
import json
import shutil

import numpy as np
import pytest
from datasets import convert_folder_argv
from PIL import Image

from fastclr import shards
from fastclr.encoders import build_encoder
from fastclr.launch._commands import commands
from fastclr.trainers import (
    EvalError,
    KnnConfig,
    LinearConfig,
    PretrainConfig,
    export_encoder,
    knn,
    linear,
    read_encoder_info,
    read_metrics,
)
from fastclr.trainers._tracking import MetricsLog


def one_line_error(code, err):
    assert code == 1, err
    lines = [line for line in err.strip().splitlines() if "img/s]" not in line]  # but a progress bar
    assert len(lines) == 1 and lines[0].startswith("fastclr: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Labelled shards (4 classes, a train and a test split, one of one class) and an exported
    small_cnn encoder folder: no training, so the module takes seconds."""
    root = tmp_path_factory.mktemp("lies")
    for split, num, classes in [("train", 32, 4), ("test", 12, 4), ("one", 12, 1)]:
        source = shards.open_source("synthetic", None, "train", num=num, size=16, classes=classes)
        shards.convert(source, root / split, progress=False)
    cfg = PretrainConfig(run_dir=str(root / "run"))
    cfg.data.train, cfg.data.size, cfg.model.encoder = str(root / "train"), 16, "small_cnn"
    (root / "run").mkdir()
    export_encoder(
        root / "run", build_encoder("small_cnn", True), cfg, shards.load_manifest(root / "train"), 3
    )
    return root


def evaluation(data, out, encoder=None, **settings):
    enc = encoder or data / "run"
    return dict(
        encoder=str(enc),
        train=str(data / "train"),
        val=str(data / "test"),
        out=str(out),
        cpu=True,
        **settings,
    )


def copy_encoder(data, tmp_path):
    shutil.copytree(data / "run", tmp_path / "run")
    return tmp_path / "run", json.loads((tmp_path / "run" / "encoder.json").read_text())


# ------------------------------------------------------------------ 4. weights that lie


def test_removing_the_hash_does_not_turn_the_weights_check_off(data, tmp_path, run_cli):
    folder, info = copy_encoder(data, tmp_path)
    del info["sha256"]
    (folder / "encoder.json").write_text(json.dumps(info))
    weights = folder / "encoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    code, _, err = run_cli("knn", *_flags(data, tmp_path / "o", folder))
    line = one_line_error(code, err)
    assert "records no sha256" in line and "trust_unhashed=true" in line
    assert not (tmp_path / "o").exists()
    del info["description_sha256"]  # trusted by the flag: the truncation is still named, in one line
    (folder / "encoder.json").write_text(json.dumps(info))
    code, out, err = run_cli("knn", *_flags(data, tmp_path / "o", folder), "trust_unhashed=true")
    assert "not a whole safetensors file" in one_line_error(code, err)
    assert "used unchecked (trust_unhashed=true)" in out


def _flags(data, out, encoder):
    return [
        "--encoder",
        encoder,
        "--train",
        data / "train",
        "--val",
        data / "test",
        "--out",
        out,
        "cpu=true",
    ]


@pytest.mark.parametrize(
    "key, value",
    [("image_size", 32), ("mean", [0.5, 0.5, 0.5]), ("std", [1.0, 1.0, 1.0]), ("encoder", "resnet18")],
)
def test_a_setting_that_changes_results_is_covered_by_the_hash(data, tmp_path, key, value):
    folder, info = copy_encoder(data, tmp_path)
    (folder / "encoder.json").write_text(json.dumps({**info, key: value}))
    with pytest.raises(EvalError, match="changed since export .description_sha256 does not match"):
        knn(KnnConfig(**evaluation(data, tmp_path / "o", folder)))


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda info: info.pop("in_chans"), "key 'in_chans' is missing"),
        (lambda info: info.update(image_size="32"), "key image_size: Input should be a valid integer"),
        (lambda info: info.update(cifar_stem=1), "key cifar_stem: Input should be a valid boolean"),
        (lambda info: info.update(mean=[0.5]), "mean holds 1 values for in_chans=3"),
        (lambda info: info.update(sha256="abc"), "key sha256: String should match pattern"),
        (lambda info: info.update(colour="red"), "unknown key 'colour'"),
    ],
)
def test_an_encoder_json_of_a_wrong_shape_is_one_line(data, tmp_path, edit, says):
    _, info = copy_encoder(data, tmp_path)
    edit(info)
    path = tmp_path / "encoder.json"
    path.write_text(json.dumps(info))
    with pytest.raises(EvalError, match=f"^{path}: .*{says}"):
        read_encoder_info(path)
    path.write_text(json.dumps([info]))  # a list instead of an object
    with pytest.raises(EvalError, match="not a JSON object of settings .a list."):
        read_encoder_info(path)


# ------------------------------------------------------------------ 5. data that lies


def test_an_npz_of_nan_pixels_or_a_label_of_a_trillion_is_refused(tmp_path, run_cli):
    pixels = np.random.default_rng(0).random((6, 8, 8, 3)).astype(np.float32)
    pixels[4, 2, 2, 1] = np.nan
    np.savez(tmp_path / "nan.npz", images=pixels, labels=np.arange(6) % 2)
    code, _, err = run_cli("shards", "convert", "npz", "--src", tmp_path / "nan.npz", "--out", tmp_path / "a")
    assert "1 NaN or infinite pixels (the first in image 4)" in one_line_error(code, err)
    labels = np.array([0, 1, 0, 1, 0, 10**12])
    np.savez(tmp_path / "big.npz", images=np.zeros((6, 8, 8, 3), np.uint8), labels=labels)
    code, _, err = run_cli("shards", "convert", "npz", "--src", tmp_path / "big.npz", "--out", tmp_path / "b")
    assert "label 1000000000000 would make 1,000,000,000,001 classes" in one_line_error(code, err)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _png16(value: int, size: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_16_bit_png_is_measured_as_it_is_stored(tmp_path, run_cli):
    """Pillow clips 16-bit grey to white (mean 1.0) where a decoder scales it to 8 bits: the image
    is narrowed to its high byte, measured so and stored so (8 bits), which every decoder reads alike."""
    for name, value in [("a", 32768), ("b", 16384)]:
        (tmp_path / "src" / name).mkdir(parents=True)
        (tmp_path / "src" / name / "0.png").write_bytes(_png16(value))
    code, out, err = run_cli(*convert_folder_argv(tmp_path / "src", tmp_path / "o"))
    assert code == 0, err
    assert "2 images of 16 bits a channel" in out
    manifest = shards.load_manifest(tmp_path / "o")
    assert manifest["provenance"]["narrowed_from_16_bits"] == 2
    assert manifest["mean"] == [round((128 + 64) / 2 / 255, 6)] * 3
    stored = [
        Image.open(io.BytesIO(sample["png"]))
        for tar in sorted((tmp_path / "o").glob("*.tar"))
        for _, sample in shards.read_samples(tar)
    ]
    assert sorted(np.asarray(image).max() for image in stored) == [64, 128]
    assert {image.mode for image in stored} == {"RGB"}


def test_a_float_tiff_or_a_class_name_with_a_newline_is_refused(tmp_path, run_cli):
    (tmp_path / "f" / "a").mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "f" / "a" / "0.tif")
    code, _, err = run_cli(*convert_folder_argv(tmp_path / "f", tmp_path / "o"))
    assert "0.tif: not a readable image (32-bit float pixels have no 8-bit reading" in one_line_error(
        code, err
    )
    (tmp_path / "n" / "cat\ndog").mkdir(parents=True)
    (tmp_path / "n" / "cat\ndog" / "0.png").write_bytes(_png16(1))
    code, _, err = run_cli(*convert_folder_argv(tmp_path / "n", tmp_path / "o"))
    assert "class name 'cat\\ndog' holds a control character" in one_line_error(code, err)


# ------------------------------------------------------------------ 6. runs that mean nothing


def test_a_batch_of_one_on_one_process_has_no_negatives_and_is_refused(data, tmp_path, run_cli):
    args = [
        f"run_dir={tmp_path / 'r'}",
        f"data.train={data / 'train'}",
        "data.size=16",
        "model.encoder=small_cnn",
    ]
    code, _, err = run_cli("pretrain", *args, "batch_size=1", "cpu=true")
    line = one_line_error(code, err)
    assert "batch_size=1 on 1 process: no other image in the batch, so no negative" in line
    assert not (tmp_path / "r" / "encoder.safetensors").exists()


def test_a_one_class_evaluation_is_refused(data, tmp_path):
    with pytest.raises(EvalError, match="only class 'class_0', so any classifier scores 100%"):
        linear(LinearConfig(**{**evaluation(data, tmp_path / "o"), "train": str(data / "one")}))


def test_knn_with_k_over_the_bank_says_the_k_it_used(data, tmp_path, run_cli):
    code, out, err = run_cli("knn", *_flags(data, tmp_path / "o", data / "run"), "--k", "1000")
    assert code == 0, err
    assert "k 1000 is more than the 32 images" in out and "(k 32): top-1" in out
    result = json.loads((tmp_path / "o" / "results.json").read_text())
    assert (result["k"], result["k_requested"]) == (32, 1000)


# ------------------------------------------------------------------ 7. configs and metrics


@pytest.mark.parametrize("name", list(commands()))
def test_an_unset_environment_variable_is_one_line_for_every_command(run_cli, name, monkeypatch):
    monkeypatch.delenv("FASTCLR_NO_SUCH_VARIABLE", raising=False)
    key = _fields(name)[0].key
    code, _, err = run_cli(*name.split(), f"{key}=${{oc.env:FASTCLR_NO_SUCH_VARIABLE}}")
    assert f"config {key}=${{oc.env:FASTCLR_NO_SUCH_VARIABLE}}: cannot be resolved" in one_line_error(
        code, err
    )


def _fields(name):
    from fastclr.config import fields

    listed = list(fields(commands()[name].settings))
    return [f for f in listed if f.required] or listed


@pytest.mark.parametrize("command", ["run", "sweep", "pretrain"])
@pytest.mark.parametrize(
    "text, says",
    [
        (
            "name: x\nsteps:\n  pretrain: {data: {train: !!set {a, b}}}\n",
            "not plain YAML (steps.pretrain.data.train",
        ),
        (
            "name: x\nsteps:\n  pretrain: {data: {train: '${oc.env:FASTCLR_NO_SUCH_VARIABLE}'}}\n",
            "config steps.pretrain.data.train=${oc.env:FASTCLR_NO_SUCH_VARIABLE}: cannot be resolved",
        ),
    ],
)
def test_an_experiment_file_with_a_set_or_an_unset_variable_is_one_line(
    tmp_path, run_cli, command, text, says
):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    extra = ["--grid", "epochs=1,2"] if command == "sweep" else []
    code, _, err = run_cli(command, "--config", path, *extra)
    assert says in one_line_error(code, err)


BAD_METRICS = '{"step": 1, "loss": 2.0}\n{"step": "x", "loss": 1.0}\n{"step": 2, "epoch_loss": 1.5}\n[3]\n'


def test_a_metrics_line_whose_step_is_no_number_is_left_out_and_said(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text(BAD_METRICS + '{"step": 3, "lo')  # and a torn last line, dropped silently
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}, {"step": 2, "epoch_loss": 1.5}]
    said = capsys.readouterr().out.strip().splitlines()
    assert said == [
        f'note: {path}: 2 lines that are no metrics records left out (line 2: step "x" is not a number); '
        "fastclr writes one object of numbers a line"
    ]
    MetricsLog(path, True, resume_step=2, redo_epoch=True)  # a resumed run's truncation keeps them
    assert path.read_text() == '{"step": 1, "loss": 2.0}\n{"step": "x", "loss": 1.0}\n[3]\n'
    assert "2 lines that are no metrics records kept as written" in capsys.readouterr().out


def test_report_and_a_run_record_read_such_a_metrics_file(data, tmp_path, run_cli):
    run = tmp_path / "pre"
    shutil.copytree(data / "run", run)
    (run / "metrics.jsonl").write_text(BAD_METRICS)
    code, out, err = run_cli("report", run, "--out", tmp_path / "rep")
    assert code == 0, err
    assert "line 2: step" in out and "| pre | small_cnn |" in (tmp_path / "rep" / "results.md").read_text()
    from fastclr.launch._experiment import _pretrain_result

    assert _pretrain_result(run) == {"epochs": 1, "loss": 1.5}
