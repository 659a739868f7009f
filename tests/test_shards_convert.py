"""Each converter on tiny files in its source's real format, read back with DALI and webdataset."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import decode, read_back_dali, read_back_webdataset
from datasets import (
    convert_folder_argv,
    tar_gz,
    write_cifar10,
    write_cifar100,
    write_imagefolder,
    write_mnist,
    write_stl10,
    write_tiny_imagenet_val,
)

from fastclr import shards


def convert(name, src, out, split="train", **kw):
    return shards.convert(shards.open_source(name, src, split), out, progress=False, **kw)


def test_reading_shards_imports_neither_torch_nor_dali(tmp_path):
    source = shards.open_source("synthetic", None, "train", num=4, size=8)
    shards.convert(source, tmp_path / "s", progress=False)
    code = (
        "import shards, sys; shards.verify(sys.argv[1]); shards.describe(sys.argv[1]); "
        "bad = {'torch', 'nvidia.dali'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "s")], check=True)


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_cifar10_round_trip_pixels_and_labels(tmp_path, encoding):
    folder, truth = write_cifar10(tmp_path / "src")
    manifest = convert("cifar10", folder, tmp_path / "out", encoding=encoding, shard_size=7)
    pixels = np.concatenate([truth[f"data_batch_{k}"][0] for k in range(1, 6)])
    labels = sum((truth[f"data_batch_{k}"][1] for k in range(1, 6)), [])
    assert manifest["num_samples"] == 30 and len(manifest["shards"]) == 5
    assert manifest["classes"][:2] == ["airplane", "automobile"]
    assert manifest["image"]["shape"] == [32, 32, 3]
    np.testing.assert_allclose(manifest["mean"], (pixels / 255).reshape(-1, 3).mean(0), atol=1e-6)
    np.testing.assert_allclose(manifest["std"], (pixels / 255).reshape(-1, 3).std(0), atol=1e-6)
    assert manifest["class_counts"] == np.bincount(labels, minlength=10).tolist()
    ext = {"png": "png", "raw": "rgb"}[encoding]
    for key, sample in read_back_webdataset(tmp_path / "out").items():
        i = int(key)
        data = sample[ext]
        got = decode(data) if encoding == "png" else np.frombuffer(data, np.uint8).reshape(32, 32, 3)
        np.testing.assert_array_equal(got, pixels[i])
        assert int(sample["cls"]) == labels[i]
    dali = read_back_dali(tmp_path / "out", ext)
    assert sorted(dali) == list(range(30))
    for i, (raw, label) in dali.items():
        got = decode(raw.tobytes()) if encoding == "png" else raw.reshape(32, 32, 3)
        np.testing.assert_array_equal(got, pixels[i])
        assert label == labels[i]
    assert shards.verify(tmp_path / "out") == {"shards": 5, "samples": 30}


def test_cifar10_from_the_distributed_tar_gz_and_test_split(tmp_path):
    folder, truth = write_cifar10(tmp_path / "src")
    archive = tar_gz(folder, tmp_path / "cifar-10-python.tar.gz")
    manifest = convert("cifar10", archive, tmp_path / "out", split="test", encoding="raw")
    assert manifest["num_samples"] == 6
    samples = read_back_webdataset(tmp_path / "out")
    for key, sample in samples.items():
        np.testing.assert_array_equal(
            np.frombuffer(sample["rgb"], np.uint8).reshape(32, 32, 3), truth["test_batch"][0][int(key)]
        )


def test_cifar100_keeps_fine_and_coarse_labels(tmp_path):
    folder, truth = write_cifar100(tmp_path / "src")
    manifest = convert("cifar100", tmp_path / "src", tmp_path / "out", split="test")
    assert manifest["num_classes"] == 100 and manifest["classes"][3] == "fine3"
    assert manifest["extra_labels"]["coarse"]["classes"][0] == "coarse0"
    pixels, fine, coarse = truth["test"]
    for key, sample in read_back_webdataset(tmp_path / "out").items():
        i = int(key)
        np.testing.assert_array_equal(decode(sample["png"]), pixels[i])
        assert (int(sample["cls"]), int(sample["coarse.cls"])) == (fine[i], coarse[i])
    shards.verify(tmp_path / "out")


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_gzipped_or_not(tmp_path, gz):
    truth = write_mnist(tmp_path / "src", gz=gz)
    manifest = convert("mnist", tmp_path / "src", tmp_path / "out", split="test", encoding="raw")
    assert manifest["image"]["shape"] == [28, 28, 1] and manifest["image"]["channels"] == 1
    pixels, labels = truth["test"]
    dali = read_back_dali(tmp_path / "out", "rgb")
    for i, (raw, label) in dali.items():
        np.testing.assert_array_equal(raw.reshape(28, 28), pixels[i])
        assert label == labels[i]


@pytest.mark.parametrize("split", ["train", "test", "unlabeled"])
def test_stl10_binary_all_splits(tmp_path, split):
    truth = write_stl10(tmp_path / "src")
    manifest = convert("stl10", tmp_path / "src", tmp_path / "out", split=split)
    pixels, labels = truth[split]
    assert manifest["labeled"] == (split != "unlabeled")
    assert manifest["classes"][7] == "monkey"
    for key, sample in read_back_webdataset(tmp_path / "out").items():
        np.testing.assert_array_equal(decode(sample["png"]), pixels[int(key)])
        assert int(sample["cls"]) == (labels[int(key)] if split != "unlabeled" else -1)
    shards.verify(tmp_path / "out")


def test_imagefolder_keeps_jpeg_bytes_unless_reencode_is_asked(tmp_path):
    files = write_imagefolder(tmp_path / "src", fmt="JPEG")
    (tmp_path / "src" / "cat" / "notes.txt").write_text("not an image, ignored and counted")
    manifest = convert("imagefolder", tmp_path / "src", tmp_path / "out")
    assert manifest["classes"] == ["cat", "dog", "eel"]
    assert manifest["image"]["encoding"] == "jpeg"
    assert manifest["source"]["ignored_non_image_files"] == 1
    in_order = [data for name in ["cat", "dog", "eel"] for data in files[name]]
    samples = read_back_webdataset(tmp_path / "out")
    for key, sample in samples.items():
        assert sample["jpg"] == in_order[int(key)]  # byte for byte
        assert int(sample["cls"]) == int(key) // 4
    dali = read_back_dali(tmp_path / "out", "jpg")
    assert {i: raw.tobytes() for i, (raw, _) in dali.items()} == dict(enumerate(in_order))

    manifest = convert(
        "imagefolder", tmp_path / "src", tmp_path / "re", encoding="jpeg", quality=50, reencode=True
    )
    sizes = [len(s["jpg"]) for s in read_back_webdataset(tmp_path / "re").values()]
    assert sum(sizes) < sum(map(len, in_order))


def test_imagefolder_png_to_raw_is_lossless(tmp_path):
    write_imagefolder(tmp_path / "src", fmt="PNG", size=16)
    convert("imagefolder", tmp_path / "src", tmp_path / "out", encoding="raw")
    for key, sample in read_back_webdataset(tmp_path / "out").items():
        original = sorted((tmp_path / "src").glob("*/*.png"))[int(key)]
        np.testing.assert_array_equal(
            np.frombuffer(sample["rgb"], np.uint8).reshape(16, 16, 3), decode(original.read_bytes())
        )


def test_tiny_imagenet_val_layout_uses_train_class_order(tmp_path):
    val = write_tiny_imagenet_val(tmp_path)
    manifest = convert("imagefolder", val, tmp_path / "out", split="test")
    assert manifest["classes"] == ["n01", "n02", "n03"]  # sorted wnids, as the train folders sort
    assert manifest["class_counts"] == [2, 2, 2]
    rows = dict(line.split("\t")[:2] for line in (val / "val_annotations.txt").read_text().splitlines())
    for key, sample in read_back_webdataset(tmp_path / "out").items():
        name = sorted(rows)[int(key)]
        assert manifest["classes"][int(sample["cls"])] == rows[name]


def test_npz_nchw_with_class_names(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (9, 3, 10, 12), dtype=np.uint8)
    labels = np.array([0, 1, 2] * 3)
    np.savez(tmp_path / "d.npz", x=pixels, y=labels, class_names=np.array(["a", "b", "c"]))
    manifest = convert("npz", tmp_path / "d.npz", tmp_path / "out", encoding="raw")
    assert manifest["classes"] == ["a", "b", "c"] and manifest["image"]["shape"] == [10, 12, 3]
    for key, sample in read_back_webdataset(tmp_path / "out").items():
        np.testing.assert_array_equal(
            np.frombuffer(sample["rgb"], np.uint8).reshape(10, 12, 3), pixels[int(key)].transpose(1, 2, 0)
        )
        assert int(sample["cls"]) == labels[int(key)]


def test_digits_is_a_stratified_80_20_split_of_real_digits(tmp_path):
    train = convert("digits", None, tmp_path / "train")
    test = convert("digits", None, tmp_path / "test", split="test")
    assert train["num_samples"] + test["num_samples"] == 1797
    assert test["num_samples"] == 360
    assert min(test["class_counts"]) >= 35  # stratified: every digit about 36 times
    assert train["image"]["shape"] == [8, 8, 1]


def test_synthetic_is_seeded(tmp_path):
    def make(out, seed):
        source = shards.open_source("synthetic", None, "train", num=20, size=16, classes=4, seed=seed)
        shards.convert(source, out, progress=False, encoding="raw")
        return {k: s["rgb"] for k, s in read_back_webdataset(out).items()}

    assert make(tmp_path / "a", 1) == make(tmp_path / "b", 1)
    assert make(tmp_path / "a2", 1) != make(tmp_path / "c", 2)


def test_two_workers_write_the_same_shards_as_one(tmp_path):
    source = shards.open_source("synthetic", None, "train", num=60, size=8, classes=3)
    one = shards.convert(source, tmp_path / "one", shard_size=10, workers=1, progress=False)
    two = shards.convert(source, tmp_path / "two", shard_size=10, workers=2, progress=False)
    assert [s["sha256"] for s in one["shards"]] == [s["sha256"] for s in two["shards"]]
    assert one["mean"] == two["mean"] and one["std"] == two["std"]


def test_shuffle_is_global_and_seeded(tmp_path):
    source = shards.open_source("synthetic", None, "train", num=40, size=8, classes=2)
    shards.convert(source, tmp_path / "a", shard_size=10, seed=3, progress=False)
    keys = list(read_back_webdataset(tmp_path / "a"))
    assert sorted(keys) == [f"{i:08d}" for i in range(40)] and keys != sorted(keys)
    first_shard = keys[:10]
    assert max(int(k) for k in first_shard) >= 10  # drawn from the whole set, not the first 10


def test_manifest_records_hashes_and_provenance(tmp_path, run_cli):
    code, out, _ = run_cli(
        "shards",
        "convert",
        "synthetic",
        "--out",
        tmp_path / "s",
        "--num",
        30,
        "--size",
        8,
        "--shard-size",
        20,
        "--quiet",
    )
    assert code == 0 and "wrote 30 samples in 2 shards" in out
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["provenance"]["command"][-1] == "--quiet"
    assert manifest["source"] == {"name": "synthetic", "num": 30, "size": 8, "classes": 10, "seed": 0}
    for shard in manifest["shards"]:
        assert len(shard["sha256"]["tar"]) == 64 and (tmp_path / "s" / shard["index"]).is_file()
    code, out, _ = run_cli("shards", "info", tmp_path / "s")
    assert code == 0 and "30 in 2 shards" in out and "synthetic" in out


def test_help_lists_every_command(run_cli):
    code, out, _ = run_cli("--help")
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("    ") and line.split()]
    for command in [
        "shards",
        "pretrain",
        "linear",
        "knn",
        "cluster",
        "finetune",
        "supervised",
        "evaluate",
        "report",
        "demo",
    ]:
        assert command in listed, command
    assert code == 0
    code, out, _ = run_cli("shards", "--help")
    for command in ["convert", "subset", "verify", "info"]:
        assert command in out


def test_python_dash_m_launch_is_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "fastclr", "shards", "--help"], capture_output=True, text=True, check=True
    )
    assert "convert" in result.stdout


def test_jpeg_quality_is_applied_when_encoding_arrays(tmp_path):
    source = shards.open_source("synthetic", None, "train", num=10, size=32)
    low = convert_size(source, tmp_path / "low", 20)
    high = convert_size(source, tmp_path / "high", 95)
    assert low < high


def convert_size(source, out, quality):
    shards.convert(source, out, encoding="jpeg", quality=quality, progress=False)
    return sum(len(s["jpg"]) for s in read_back_webdataset(out).values())


def test_max_side_shrinks_only_large_images(tmp_path, run_cli):
    from datasets import encode, images

    write_imagefolder(tmp_path / "src", size=16)
    (tmp_path / "src" / "dog" / "huge.jpg").write_bytes(encode(images(1, 80, 40)[0], "JPEG"))
    args = convert_folder_argv(tmp_path / "src", tmp_path / "o")
    code, _, err = run_cli(*args, "--max-side", 32, "--quiet")
    assert code == 0, err
    manifest = shards.load_manifest(tmp_path / "o")
    assert manifest["image"]["max_size"] == [32, 16] and manifest["provenance"]["max_side"] == 32
    small = sorted((tmp_path / "src").glob("*/img_*.jpg"))
    kept = {s["jpg"] for s in read_back_webdataset(tmp_path / "o").values()}
    assert {p.read_bytes() for p in small} <= kept  # small files stay byte for byte


def test_an_image_folders_split_comes_from_its_name_or_is_asked_for(tmp_path, run_cli):
    for name in ("test", "photos"):
        write_imagefolder(tmp_path / name, per_class=1)
    code, _, err = run_cli(
        "shards", "convert", "imagefolder", "--src", tmp_path / "test", "--out", tmp_path / "a"
    )
    assert code == 0, err
    assert shards.load_manifest(tmp_path / "a")["split"] == "test"
    assert [p.name for p in (tmp_path / "a").glob("*.tar")] == ["test-000000.tar"]
    code, _, err = run_cli(
        "shards", "convert", "imagefolder", "--src", tmp_path / "photos", "--out", tmp_path / "b"
    )
    assert code == 1 and "does not say which split it is" in err and "--split train" in err
    assert not (tmp_path / "b").exists()
    argv = ["shards", "convert", "imagefolder", "--src", tmp_path / "photos", "--out", tmp_path / "b"]
    code, _, err = run_cli(*argv, "--split", "val")
    assert code == 0 and shards.load_manifest(tmp_path / "b")["split"] == "val", err
