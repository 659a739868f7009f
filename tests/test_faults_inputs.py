"""Bad inputs to `fastclr pretrain`: one line naming the thing, exit 1, nothing changed on disk.

Shard damage comes in two kinds: files changed after conversion (stale hashes;
refused before DALI starts) and hand-made shards whose hashes were recomputed
(found when DALI or the label check trips, then named by `shards.verify`).
"""

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_faults import pretrain_args
from test_shards_bad_input import one_line_error

from fastclr import shards
from fastclr.encoders import build_encoder
from fastclr.shards._convert import seal_shard
from fastclr.trainers import EvalError, load_encoder

SHARD = "train-000001"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    for name, seed, classes in [("train", 0, 4), ("other", 9, 4), ("three", 3, 3)]:
        source = shards.open_source("synthetic", None, "train", num=96, size=16, classes=classes, seed=seed)
        shards.convert(source, root / name, encoding="jpeg", shard_size=32, progress=False)
    return root


@pytest.fixture
def folder(pristine, tmp_path):
    return Path(shutil.copytree(pristine / "train", tmp_path / "train"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def rewrite(folder: Path, edit, reseal: bool = False) -> None:
    """Shard 1's members through `edit([(name, bytes), ...])`; `reseal`: fresh index and hashes too."""
    tar = folder / f"{SHARD}.tar"
    with tarfile.open(tar) as t:
        members = [(m.name, t.extractfile(m).read()) for m in t.getmembers()]
    with tarfile.open(tar, "w") as t:
        for name, data in edit(members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    if reseal:
        path = folder / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["shards"][1].update(seal_shard(tar, folder / f"{SHARD}.idx"))
        path.write_text(json.dumps(manifest))


def first(ext: str, replace):
    """An edit applying `replace(data)` to the first member ending in `ext` (None drops it)."""

    def edit(members):
        n = next(i for i, (name, _) in enumerate(members) if name.endswith(ext))
        data = replace(members[n][1])
        return members[:n] + ([] if data is None else [(members[n][0], data)]) + members[n + 1 :]

    return edit


def edit_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def appended(members):
    return [*members, ("evil.sh", b"#!/bin/sh\nrm -rf ~\n")]


def with_link(tar: Path) -> None:
    with tarfile.open(tar, "a") as t:
        info = tarfile.TarInfo("00000099.jpg")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(info)


def truncate(f: Path, o: Path) -> None:
    tar = f / f"{SHARD}.tar"
    tar.write_bytes(tar.read_bytes()[:40000])


def foreign_shard(f: Path, o: Path) -> None:
    for ext in ("tar", "idx"):
        shutil.copy(o / f"{SHARD}.{ext}", f / f"{SHARD}.{ext}")


STALE = [  # name, damage(folder, other dataset), what the line says, what the quick check says (None: same)
    ("truncated-tar", truncate, f"{SHARD}.tar: damaged or truncated tar", f"{SHARD}.tar: truncated"),
    (
        "tar-with-unexpected-member",
        lambda f, o: rewrite(f, appended),
        f"{SHARD}.tar: member evil.sh is none of the 32 samples",
        f"{SHARD}.tar: holds members its index does not list",
    ),
    (
        "tar-with-a-link-member",
        lambda f, o: with_link(f / f"{SHARD}.tar"),
        "member '00000099.jpg' is not a regular file",
        f"{SHARD}.tar: holds members its index does not list",
    ),
    (
        "zero-byte-tar",
        lambda f, o: (f / f"{SHARD}.tar").write_bytes(b""),
        f"{SHARD}.tar: ",
        f"{SHARD}.tar: its first member is not",
    ),
    (
        "zero-byte-index",
        lambda f, o: (f / f"{SHARD}.idx").write_bytes(b""),
        f"{SHARD}.idx: sha256 mismatch",
        None,
    ),
    (
        "missing-tar",
        lambda f, o: (f / f"{SHARD}.tar").unlink(),
        f"{SHARD}.tar: listed in the manifest but missing",
        None,
    ),
    (
        "zero-byte-manifest",
        lambda f, o: (f / "manifest.json").write_bytes(b""),
        "manifest.json: not valid JSON",
        None,
    ),
    (
        "manifest-of-unknown-version",
        lambda f, o: edit_manifest(f, lambda m: m.update(version=99)),
        "manifest.json: manifest version 99, this fastclr reads version 1",
        None,
    ),
    (
        "manifest-with-a-wrong-hash",
        lambda f, o: edit_manifest(f, lambda m: m["shards"][1]["sha256"].update(tar="0" * 64)),
        f"{SHARD}.tar: sha256 mismatch",
        "full check only",
    ),
    (
        "tar-and-index-of-another-dataset",
        foreign_shard,
        f"{SHARD}.tar: sample",
        f"{SHARD}.idx: sha256 mismatch",
    ),
    (
        "shard-of-another-dataset-added",
        lambda f, o: shutil.copy(o / f"{SHARD}.tar", f / "train-000009.tar"),
        "train-000009.tar: not listed in",
        None,
    ),
]
# Every case under the full check, and all but the hash one under the quick check (shard sets of many GiB).
CHECKS = [(name, damage, full, False) for name, damage, full, _ in STALE] + [
    (f"{name}-quick", damage, quick or full, True)
    for name, damage, full, quick in STALE
    if quick != "full check only"
]


@pytest.mark.parametrize("damage, says, quick", [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS])
def test_changed_shards_are_refused_before_training(
    pristine, folder, tmp_path, run_cli, monkeypatch, damage, says, quick
):
    if quick:
        monkeypatch.setattr(shards._verify, "FULL_CHECK_BYTES", 0)  # as for a shard set of many GiB
    damage(folder, pristine / "other")
    before = snapshot(folder)
    code, _, err = run_cli(*pretrain_args(folder, tmp_path / "run"))
    assert says in one_line_error(code, err)
    assert snapshot(folder) == before and not (tmp_path / "run").exists()


RESEALED = [  # hand-made shards with fresh hashes: DALI or the label check trips, verify names the sample
    ("sample-without-label", first(".cls", lambda data: None), "no .cls label member"),
    ("sample-without-image", first(".jpg", lambda data: None), "expected one image member"),
    ("non-image-bytes-named-jpg", first(".jpg", lambda data: b"this is text, not a JPEG"), "does not decode"),
    ("zero-byte-image", first(".jpg", lambda data: b""), "does not decode"),
    ("label-outside-the-classes", first(".cls", lambda data: b"7"), "label 7 outside 0..3"),
]


@pytest.mark.parametrize("edit, says", [c[1:] for c in RESEALED], ids=[c[0] for c in RESEALED])
def test_bad_samples_with_fresh_hashes_are_named(folder, tmp_path, run_cli, edit, says):
    rewrite(folder, edit, reseal=True)
    before = snapshot(folder)
    code, _, err = run_cli(*pretrain_args(folder, tmp_path / "run", "epochs=1"))
    line = one_line_error(code, err)
    assert f"{SHARD}.tar: sample " in line and says in line
    assert snapshot(folder) == before and not (tmp_path / "run" / "encoder.safetensors").exists()


def test_knn_monitor_shards_of_two_datasets_are_refused(pristine, folder, tmp_path, run_cli):
    args = [f"data.knn_bank={folder}", f"data.knn_val={pristine / 'three'}"]
    code, _, err = run_cli(*pretrain_args(folder, tmp_path / "run", *args))
    line = one_line_error(code, err)
    assert "hold other classes (4 classes in" in line and "only " in line and "'class_3'" in line
    # with the monitor off (knn_every=0) its folders are not read at all
    code, _, err = run_cli(*pretrain_args(folder, tmp_path / "off", *args, "knn_every=0", "epochs=1"))
    assert code == 0, err


def test_an_unlabelled_knn_bank_is_named_as_such(pristine, tmp_path, run_cli):
    source = shards.open_source("synthetic", None, "unlabeled", num=32, size=16, classes=4)
    shards.convert(source, tmp_path / "unlabelled", progress=False)
    args = [f"data.knn_bank={tmp_path / 'unlabelled'}", f"data.knn_val={pristine / 'other'}"]
    code, _, err = run_cli(*pretrain_args(pristine / "train", tmp_path / "run", *args))
    line = one_line_error(code, err)
    assert f"data.knn_bank={tmp_path / 'unlabelled'}: these shards have no labels" in line
    assert "knn_every=0" in line and not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gray") / "digits"
    shards.convert(shards.open_source("digits", None, "train"), folder, progress=False)
    return folder


COLOUR_ON_GRAY = ["data.preset=simclr", "data.fraction=0.5", "data.size=8"]


def test_a_colour_preset_on_gray_shards_names_the_users_folder_before_a_subset(digits, tmp_path, run_cli):
    code, _, err = run_cli(*pretrain_args(digits, tmp_path / "run", *COLOUR_ON_GRAY))
    line = one_line_error(code, err)
    assert f"data.train={digits} holds 1-channel images" in line and "data.preset=digits" in line
    assert not (tmp_path / "run").exists(), "refused before the run_dir (and a subset in it) was made"


@pytest.mark.multiproc
def test_under_torchrun_every_rank_exits_with_the_one_line(digits, tmp_path):
    """No subset built, no traceback from fastclr's code, the user's folder named by each rank."""
    from conftest import torchrun

    args = [a for a in pretrain_args(digits, tmp_path / "run", *COLOUR_ON_GRAY) if a != "cpu=true"]
    result = torchrun(29557, "-m", "fastclr", *args, env={"CUDA_VISIBLE_DEVICES": ""})
    line = "fastclr: error: config data.preset=simclr uses colour (ColorJitter, Grayscale), but "
    line += f"data.train={digits} holds 1-channel images"
    # each rank says it; torchrun may end a slower rank (SIGTERM) once the first has exited
    assert result.returncode == 1 and 1 <= result.stderr.count(line) <= 2, result.stderr
    assert "fastclr/" not in result.stderr and "trainers/" not in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_an_init_file_of_another_architecture_is_refused(folder, tmp_path, run_cli):
    save_file(build_encoder("resnet18").state_dict(), tmp_path / "resnet18.safetensors")
    code, _, err = run_cli(
        *pretrain_args(folder, tmp_path / "run", f"model.pretrained_file={tmp_path}/resnet18.safetensors")
    )
    line = one_line_error(code, err)
    assert "resnet18.safetensors: no key matches this encoder" in line and "another architecture" in line
    assert not (tmp_path / "run").exists()


class Payload:
    """Unpickling this runs code: what a booby-trapped .pt would do."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_an_init_file_holding_pickled_code_is_refused_without_running_it(folder, tmp_path, run_cli):
    torch.save({"conv.weight": torch.zeros(1), "x": Payload(tmp_path / "pwned")}, tmp_path / "evil.pt")
    code, _, err = run_cli(
        *pretrain_args(folder, tmp_path / "run", f"model.pretrained_file={tmp_path}/evil.pt")
    )
    assert "evil.pt: holds pickled Python objects besides tensors; refusing" in one_line_error(code, err)
    assert not (tmp_path / "pwned").exists()


def test_a_torn_encoder_description_is_named(tmp_path):
    save_file(build_encoder("small_cnn").state_dict(), tmp_path / "encoder.safetensors")
    (tmp_path / "encoder.json").write_text('{"encoder": "small_cnn", "cifar_st')
    with pytest.raises(EvalError, match="encoder.json: not valid JSON"):
        load_encoder(tmp_path)
