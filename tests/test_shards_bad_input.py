"""Every bad input gets one line naming the file and the fix, and nothing half-written."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from datasets import convert_folder_argv, write_cifar10, write_imagefolder, write_mnist

from fastclr import shards


def one_line_error(code, err):
    assert code == 1, err
    lines = err.strip().splitlines()  # a progress bar may come first
    errors = [line for line in lines if line.startswith("fastclr:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("fastclr: error: "), err
    return errors[0]


def test_missing_src(tmp_path, run_cli):
    code, _, err = run_cli(
        "shards", "convert", "cifar10", "--src", tmp_path / "nope", "--out", tmp_path / "o"
    )
    assert "nope: no such file or folder" in one_line_error(code, err)


def test_src_required(tmp_path, run_cli):
    code, _, err = run_cli("shards", "convert", "mnist", "--out", tmp_path / "o")
    assert "needs --src" in one_line_error(code, err)


def test_a_source_in_another_format(tmp_path, run_cli):
    write_imagefolder(tmp_path / "folder")
    code, _, err = run_cli(
        "shards", "convert", "cifar10", "--src", tmp_path / "folder", "--out", tmp_path / "o"
    )
    line = one_line_error(code, err)
    assert "no CIFAR-10 files" in line and "cifar-10-python.tar.gz" in line
    write_cifar10(tmp_path / "c")
    code, _, err = run_cli("shards", "convert", "mnist", "--src", tmp_path / "c", "--out", tmp_path / "o")
    assert "no train-images-idx3-ubyte" in one_line_error(code, err)


def test_mnist_file_with_wrong_magic(tmp_path, run_cli):
    write_mnist(tmp_path / "m", gz=False)
    path = tmp_path / "m" / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x09\x99" + path.read_bytes()[4:])
    code, _, err = run_cli("shards", "convert", "mnist", "--src", tmp_path / "m", "--out", tmp_path / "o")
    assert "not an IDX file" in one_line_error(code, err)


def test_a_pickle_that_is_not_cifar_is_refused_without_running_it(tmp_path, run_cli):
    folder, _ = write_cifar10(tmp_path / "c")
    evil = b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR."
    (folder / "data_batch_3").write_bytes(evil)
    code, _, err = run_cli("shards", "convert", "cifar10", "--src", folder, "--out", tmp_path / "o")
    line = one_line_error(code, err)
    assert "data_batch_3: not a CIFAR python batch" in line and "refusing to load" in line
    assert not (tmp_path / "pwned").exists()


def test_corrupt_image_fails_by_default_and_is_counted_when_skipped(tmp_path, run_cli):
    write_imagefolder(tmp_path / "src")
    bad = tmp_path / "src" / "dog" / "img_001.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    (tmp_path / "src" / "eel" / "fake.jpg").write_bytes(b"this is text, not a jpeg")
    code, _, err = run_cli(*convert_folder_argv(tmp_path / "src", tmp_path / "o"))
    line = one_line_error(code, err)
    assert "not a readable image" in line and "--skip-corrupt" in line
    assert not (tmp_path / "o").exists() and not (tmp_path / ".o.partial").exists()

    args = convert_folder_argv(tmp_path / "src", tmp_path / "o")
    code, out, _ = run_cli(*args, "--skip-corrupt", "--quiet")
    assert code == 0 and "2 unreadable images skipped" in out
    manifest = shards.load_manifest(tmp_path / "o")
    assert manifest["skipped"]["count"] == 2 and manifest["num_samples"] == 11
    assert {os.path.basename(s["origin"]) for s in manifest["skipped"]["samples"]} == {
        "img_001.jpg",
        "fake.jpg",
    }


def test_zero_byte_image(tmp_path, run_cli):
    write_imagefolder(tmp_path / "src")
    (tmp_path / "src" / "cat" / "empty.png").write_bytes(b"")
    code, _, err = run_cli(*convert_folder_argv(tmp_path / "src", tmp_path / "o"))
    assert "empty.png: not a readable image" in one_line_error(code, err)


def test_empty_class_folder(tmp_path, run_cli):
    write_imagefolder(tmp_path / "src")
    (tmp_path / "src" / "fox").mkdir()
    code, _, err = run_cli(*convert_folder_argv(tmp_path / "src", tmp_path / "o"))
    assert "fox: class folder holds no images" in one_line_error(code, err)


def test_existing_out_is_refused_without_overwrite(tmp_path, run_cli):
    args = ["shards", "convert", "synthetic", "--num", 10, "--size", 8, "--out", tmp_path / "o", "--quiet"]
    assert run_cli(*args)[0] == 0
    before = (tmp_path / "o" / "manifest.json").read_text()
    code, _, err = run_cli(*args)
    assert "already exists; pass --overwrite" in one_line_error(code, err)
    assert (tmp_path / "o" / "manifest.json").read_text() == before
    code, _, _ = run_cli(*args, "--overwrite", "--seed", 5)
    assert code == 0 and (tmp_path / "o" / "manifest.json").read_text() != before
    shards.verify(tmp_path / "o")


def test_overwrite_never_deletes_a_folder_that_is_not_shards(tmp_path, run_cli):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("precious")
    code, _, err = run_cli("shards", "convert", "digits", "--out", tmp_path / "home", "--overwrite")
    assert "is not a fastclr shard folder" in one_line_error(code, err)
    assert (tmp_path / "home" / "thesis.tex").read_text() == "precious"


def test_unwritable_out(tmp_path, run_cli):
    (tmp_path / "file").write_text("a file, not a folder")
    code, _, err = run_cli("shards", "convert", "digits", "--out", tmp_path / "file" / "shards")
    assert "cannot write there" in one_line_error(code, err)


def test_label_out_of_range_in_npz(tmp_path, run_cli):
    import numpy as np

    np.savez(
        tmp_path / "d.npz",
        images=np.zeros((3, 4, 4), np.uint8),
        labels=np.array([0, 1, 5]),
        class_names=np.array(["a", "b"]),
    )
    code, _, err = run_cli("shards", "convert", "npz", "--src", tmp_path / "d.npz", "--out", tmp_path / "o")
    assert "label 5 but only 2 class_names" in one_line_error(code, err)


def test_raw_needs_one_image_size(tmp_path, run_cli):
    write_imagefolder(tmp_path / "src", size=16)
    (tmp_path / "src" / "cat" / "big.jpg").write_bytes(
        (tmp_path / "src" / "cat" / "img_000.jpg").read_bytes()
    )
    from datasets import encode, images

    (tmp_path / "src" / "cat" / "big.jpg").write_bytes(encode(images(1, 20, 30)[0], "JPEG"))
    args = convert_folder_argv(tmp_path / "src", tmp_path / "o")
    code, _, err = run_cli(*args, "--encoding", "raw")
    assert "--encoding raw needs one image size" in one_line_error(code, err)
    assert not (tmp_path / "o").exists()


def test_wrong_split_for_a_source(tmp_path, run_cli):
    write_mnist(tmp_path / "m")
    args = [
        "shards",
        "convert",
        "mnist",
        "--src",
        tmp_path / "m",
        "--out",
        tmp_path / "o",
        "--split",
        "unlabeled",
    ]
    code, _, err = run_cli(*args)
    assert "mnist has no 'unlabeled' split" in one_line_error(code, err)


@pytest.mark.slow
def test_a_conversion_killed_halfway_leaves_nothing_finished_and_a_rerun_starts_clean(tmp_path):
    out = tmp_path / "o"
    partial = tmp_path / ".o.partial"
    cmd = [
        sys.executable,
        "-m",
        "fastclr",
        "shards",
        "convert",
        "synthetic",
        "--num",
        "6000",
        "--size",
        "48",
        "--shard-size",
        "100",
        "--out",
        str(out),
        "--quiet",
    ]
    proc = subprocess.Popen(cmd)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(partial.glob("*.idx"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(partial.glob("*.tar")), "the conversion ended before it could be killed"
    assert not out.exists()
    assert not (partial / "manifest.json").exists()
    small = [*cmd[:7], "300", *cmd[8:]]
    subprocess.run(small, check=True)
    assert not partial.exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == 300 and sorted(p.name for p in out.iterdir())[-1] == "train-000002.tar"
    shards.verify(out)
