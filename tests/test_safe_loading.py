"""Nothing fastclr reads can run code, and no path inside an archive can write outside its folder.

The scan reads every module of the packages: a new `pickle.load`, a
`torch.load` without `weights_only=True` or an `extractall` without the "data"
filter fails it.
"""

import ast
import io
import tarfile
from pathlib import Path

import pytest
from datasets import write_cifar10
from test_shards_bad_input import one_line_error

from fastclr import shards
from fastclr.bench.convert import unpack

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["shards", "pipelines", "encoders", "trainers", "launch", "bench"]
# Calls that turn bytes into running code (or may): never on data, configs or weights.
FORBIDDEN = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "marshal.load",
    "marshal.loads",
    "shelve.open",
    "dill.load",
    "dill.loads",
    "joblib.load",
    "yaml.load",
    "yaml.unsafe_load",
    "yaml.full_load",
    "torch.hub.load",
    "eval",
    "exec",
}


def unsafe_calls(source: str) -> list[str]:
    """Each place in `source` that could unpickle, evaluate, or extract an archive unfiltered."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and any(ast.unparse(b).endswith("Unpickler") for b in node.bases):
            if not any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in node.body):
                problems.append(f"line {node.lineno}: an Unpickler that allows every class")
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: k.value for k in node.keywords}

        def constant(key, keywords=keywords):
            value = keywords.get(key)
            return value.value if isinstance(value, ast.Constant) else None

        if name in FORBIDDEN:
            problems.append(f"line {node.lineno}: {name}")
        elif name == "torch.load" and constant("weights_only") is not True:
            problems.append(f"line {node.lineno}: torch.load without weights_only=True")
        elif (
            name in ("np.load", "numpy.load")
            and "allow_pickle" in keywords
            and constant("allow_pickle") is not False
        ):
            problems.append(f"line {node.lineno}: np.load allowing pickles")
        elif name.split(".")[-1] in ("extractall", "extract") and constant("filter") != "data":
            problems.append(f"line {node.lineno}: {name} without filter='data'")
    return problems


def test_the_scan_catches_each_unsafe_call():
    bad = """
import pickle, torch, numpy as np, yaml
pickle.loads(b"")
torch.load("x.pt")
torch.load("x.pt", weights_only=False)
np.load("x.npy", allow_pickle=True)
yaml.load(text)
tar.extractall(out)
eval("1")
class Loose(pickle.Unpickler):
    pass
"""
    assert len(unsafe_calls(bad)) == 8
    good = """
torch.load("x.pt", weights_only=True)
np.load("x", allow_pickle=False)
tar.extractall(o, filter="data")
"""
    assert unsafe_calls(good) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_loads_anything_unsafely(package):
    found = {
        str(path.relative_to(ROOT)): problems
        for path in sorted((ROOT / package).rglob("*.py"))
        if (problems := unsafe_calls(path.read_text()))
    }
    assert found == {}


def test_a_config_with_a_python_object_tag_is_refused_without_running_it(tmp_path, run_cli):
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"epochs: !!python/object/apply:os.system ['touch {tmp_path / 'pwned'}']\n")
    code, _, err = run_cli("pretrain", "--config", evil)
    assert "evil.yaml: not plain YAML" in one_line_error(code, err)
    assert not (tmp_path / "pwned").exists()


def evil_members(tar: tarfile.TarFile, outside: Path) -> None:
    """Members that try to land outside the folder they are unpacked into."""
    for name in ("../../escaped.txt", str(outside / "absolute.txt")):
        info = tarfile.TarInfo(name)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    link = tarfile.TarInfo("cifar-10-batches-py/passwd")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    tar.addfile(link)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_shards_convert_reads_archive_members_but_writes_only_its_output(tmp_path, run_cli):
    folder, _ = write_cifar10(tmp_path / "src")
    archive = tmp_path / "deep" / "er" / "cifar.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
        evil_members(tar, tmp_path / "outside")
    before = files_under(tmp_path)
    code, _, err = run_cli(
        "shards", "convert", "cifar10", "--src", archive, "--out", tmp_path / "out", "--quiet"
    )
    assert code == 0, err
    new = files_under(tmp_path) - before
    assert new and all(name.startswith("out") for name in new), new
    assert not (tmp_path / "outside").exists()
    shards.verify(tmp_path / "out")


def test_bench_unpack_refuses_members_that_escape_its_folder(tmp_path):
    archive = tmp_path / "deep" / "er" / "data.tar"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w") as tar:
        evil_members(tar, tmp_path / "outside")
    with pytest.raises(tarfile.FilterError):
        unpack(archive, tmp_path / "deep" / "work")
    assert not (tmp_path / "deep" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "outside").exists()
    assert {p.name for p in tmp_path.rglob("*")} <= {"deep", "er", "data.tar", "work", "src"}


class Payload:
    """Unpickling this runs code: what a booby-trapped .pt would do."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_weights_files_of_the_usual_wrappers_load_and_pickled_code_never_runs(tmp_path):
    import argparse

    import torch

    from fastclr.encoders import EncoderError, build_encoder

    source = build_encoder("small_cnn").state_dict()
    files = {
        "ddp.pth": {f"module.{k}": v for k, v in source.items()},
        "compiled.pt": {f"_orig_mod.{k}": v for k, v in source.items()},
        "timm-train.pth": {"state_dict": source, "epoch": 3, "args": argparse.Namespace(lr=0.1)},
        "deepspeed.pt": {"module": source},
        "solo-learn.ckpt": {"state_dict": {f"backbone.{k}": v for k, v in source.items()}},
    }
    for name, content in files.items():
        torch.save(content, tmp_path / name)
        encoder = build_encoder("small_cnn", pretrained_file=tmp_path / name)
        assert encoder.load_report["missing"] == [] and encoder.load_report["unused"] == [], name
        assert all(torch.equal(encoder.state_dict()[k], v) for k, v in source.items()), name
    torch.save({**source, "x": Payload(tmp_path / "pwned")}, tmp_path / "evil.pth")
    with pytest.raises(EncoderError, match="evil.pth: holds pickled Python objects besides tensors"):
        build_encoder("small_cnn", pretrained_file=tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()
