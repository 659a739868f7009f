"""verify catches damage and names the sample; subset is stratified, exact and reproducible."""

import json

import numpy as np
import pytest
from conftest import read_back_webdataset

from fastclr import shards


@pytest.fixture
def folder(tmp_path):
    source = shards.open_source("synthetic", None, "train", num=60, size=8, classes=3)
    shards.convert(source, tmp_path / "s", shard_size=25, progress=False)
    return tmp_path / "s"


def member_offset(folder, key):
    """Data offset of sample `key`'s image inside shard 0, from our own index file."""
    for line in (folder / "train-000000.idx").read_text().splitlines()[1:]:
        fields = line.split()
        for i in range(0, len(fields), 4):
            if fields[i + 3] == f"{key}.png":
                return int(fields[i + 1])
    raise AssertionError(key)


def test_verify_passes_a_fresh_folder(folder, run_cli):
    code, out, err = run_cli("shards", "verify", folder)
    assert code == 0 and "OK, 60 samples in 3 shards" in out


def test_verify_names_the_sample_holding_one_flipped_byte(folder, run_cli):
    tar = folder / "train-000000.tar"
    keys = [k for k, _ in shards.read_samples(tar)]
    key = keys[7]
    data = bytearray(tar.read_bytes())
    data[member_offset(folder, key) + 40] ^= 0x01
    tar.write_bytes(bytes(data))
    code, _, err = run_cli("shards", "verify", folder)
    assert code == 1
    assert f"train-000000.tar: sample {key} changed since conversion" in err
    assert len(err.strip().splitlines()) == 1


def test_verify_names_where_a_truncated_tar_ends(folder, run_cli):
    tar = folder / "train-000001.tar"
    keys = [k for k, _ in shards.read_samples(tar)]
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli("shards", "verify", folder)
    assert code == 1 and "train-000001.tar" in err and "truncated" in err
    assert any(f"sample {k}" in err for k in keys)


def test_verify_catches_an_index_that_disagrees(folder, run_cli):
    idx = folder / "train-000002.idx"
    lines = idx.read_text().splitlines()
    lines[3] = lines[3].replace(" 512 ", " 1024 ", 1) if " 512 " in lines[3] else lines[3] + " x 1 1 y"
    idx.write_text("\n".join(lines) + "\n")
    code, _, err = run_cli("shards", "verify", folder)
    assert code == 1 and "train-000002.idx" in err


def test_verify_catches_a_label_out_of_range_even_with_fresh_hashes(tmp_path, run_cli):
    """A manifest edited to fewer classes (hashes still right): the label check must fire."""
    source = shards.open_source("synthetic", None, "train", num=12, size=8, classes=4)
    shards.convert(source, tmp_path / "s", progress=False)
    path = tmp_path / "s" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["classes"], manifest["num_classes"] = manifest["classes"][:2], 2
    path.write_text(json.dumps(manifest))
    code, _, err = run_cli("shards", "verify", tmp_path / "s")
    assert code == 1 and "label" in err and "outside 0..1" in err and "sample" in err


def test_verify_refuses_shards_of_another_conversion_mixed_in(folder, tmp_path, run_cli):
    (folder / "train-000099.tar").write_bytes(b"")
    code, _, err = run_cli("shards", "verify", folder)
    assert code == 1 and "train-000099.tar: not listed" in err


def test_verify_refuses_a_manifest_of_another_version(folder, run_cli):
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["version"] = 99
    path.write_text(json.dumps(manifest))
    code, _, err = run_cli("shards", "verify", folder)
    assert code == 1 and "manifest version 99" in err


def test_verify_of_a_folder_without_manifest(tmp_path, run_cli):
    (tmp_path / "half").mkdir()
    code, _, err = run_cli("shards", "verify", tmp_path / "half")
    assert code == 1 and "not a finished shard folder" in err


def test_subset_fraction_is_exact_per_class(tmp_path):
    source = shards.open_source("synthetic", None, "train", num=95, size=8, classes=4)
    parent = shards.convert(source, tmp_path / "all", shard_size=30, progress=False)
    sub = shards.subset(tmp_path / "all", tmp_path / "sub", fraction=0.3, seed=1)
    expected = [max(1, int(np.floor(0.3 * n + 0.5))) for n in parent["class_counts"]]
    assert sub["class_counts"] == expected and sub["num_samples"] == sum(expected)
    got = read_back_webdataset(tmp_path / "sub")
    counts = np.bincount([int(s["cls"]) for s in got.values()], minlength=4).tolist()
    assert counts == expected
    original = read_back_webdataset(tmp_path / "all")
    for key, sample in got.items():  # bytes copied unchanged
        assert sample["png"] == original[key]["png"]
    assert sub["subset"]["parent_num_samples"] == 95 and sub["subset"]["seed"] == 1
    assert sub["mean"] == parent["mean"]
    shards.verify(tmp_path / "sub")


def test_subset_is_reproducible_and_seed_dependent(tmp_path):
    source = shards.open_source("synthetic", None, "train", num=80, size=8, classes=4)
    shards.convert(source, tmp_path / "all", progress=False)

    def keys(name, seed):
        shards.subset(tmp_path / "all", tmp_path / name, per_class=5, seed=seed)
        return sorted(read_back_webdataset(tmp_path / name))

    first, again, other = keys("a", 0), keys("b", 0), keys("c", 1)
    assert first == again and first != other and len(first) == 20


def test_subset_refuses_more_per_class_than_there_are(folder, tmp_path, run_cli):
    code, _, err = run_cli("shards", "subset", folder, "--out", tmp_path / "x", "--per-class", 50)
    assert code == 1 and "fewer than --per-class 50" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / ".x.partial").exists()


def test_subset_of_unlabeled_shards_takes_a_plain_fraction(tmp_path, run_cli):
    source = shards.open_source("synthetic", None, "unlabeled", num=40, size=8)
    shards.convert(source, tmp_path / "u", progress=False)
    code, out, _ = run_cli("shards", "subset", tmp_path / "u", "--out", tmp_path / "half", "--fraction", 0.5)
    assert code == 0 and "wrote 20 of 40" in out
    code, _, err = run_cli("shards", "subset", tmp_path / "u", "--out", tmp_path / "k", "--per-class", 2)
    assert code == 1 and "--per-class needs labelled shards" in err
