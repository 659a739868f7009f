"""Two writers, one output; outputs that land on inputs.

Every command that writes a folder holds its lock while it writes: a second writer is refused at
once, naming the first (races: a real first process held at a known point, then the second). An
output that is a shard folder, lies in one, or holds another command's output is refused before
anything is written there; the same command rerun in its own folder replaces its output. The
free-space advice is given for a full disk only.
"""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_shards_bad_input import one_line_error

import fastclr.shards._convert
import fastclr.trainers._eval_io
from fastclr import shards
from fastclr.files import FolderLock, write_advice
from fastclr.trainers import PretrainConfig, pretrain
from fastclr.trainers._lock import RunDirLock

ROOT = Path(__file__).resolve().parents[1]
CONVERT = ["shards", "convert", "synthetic", "--num", 40, "--size", 16, "--classes", 4, "--quiet"]
# Runs `fastclr ARGS` with MODULE.FUNCTION held: on its first call it touches READY, then waits for GO.
HOLD = """
import importlib, sys, time
from pathlib import Path
module_name, function_name, ready, go = sys.argv[1:5]
module = importlib.import_module(module_name)
original = getattr(module, function_name)
def held(*args, **kwargs):
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.05)
    return original(*args, **kwargs)
setattr(module, function_name, held)
sys.argv = ["fastclr", *sys.argv[5:]]
from fastclr.launch.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Labelled shards, a real (tiny) pretrain run on them, and an imported encoder."""
    root = tmp_path_factory.mktemp("outputs")
    for split, seed in (("train", 1), ("test", 2)):
        source = shards.open_source("synthetic", None, "train", num=32, size=16, classes=4, seed=seed)
        shards.convert(source, root / split, shard_size=16, progress=False)
    cfg = PretrainConfig(run_dir=str(root / "run"), epochs=1, batch_size=16, precision="fp32", cpu=True)
    cfg.data.train, cfg.data.size, cfg.data.num_threads = str(root / "train"), 16, 1
    cfg.model.encoder, cfg.model.hidden_dim, cfg.model.out_dim = "small_cnn", 32, 16
    cfg.optim.name, cfg.optim.lr, cfg.optim.warmup_epochs = "adam", 1e-3, 0
    cfg.track.progress = False
    pretrain(cfg)
    from fastclr.encoders import build_encoder

    torch.save(build_encoder("small_cnn").state_dict(), root / "small_cnn.pth")
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def commands(data: Path, out: Path) -> dict[str, list]:
    """Every command that writes a folder, writing `out`."""
    pair = ["--train", data / "train", "--val", data / "test", "--out", out]
    return {
        "shards convert": [*CONVERT, "--out", out, "--overwrite"],
        "shards subset": ["shards", "subset", data / "train", "--out", out, "--fraction", 0.5, "--overwrite"],
        "linear": ["linear", "--encoder", data / "run", *pair, "--epochs", 1],
        "knn": ["knn", "--encoder", data / "run", *pair, "--k", 3],
        "cluster": ["cluster", "--data", data / "test", "--out", out],
        "finetune": ["finetune", "--encoder", data / "run", *pair, "--epochs", 1, "--cpu"],
        "supervised": ["supervised", "--model", "small_cnn", "--size", 16, *pair, "--epochs", 1, "--cpu"],
        "evaluate": ["evaluate", "--model", data / "no-model-yet", "--val", data / "test", "--out", out],
        "import-weights": ["import-weights", "--model", "small_cnn", "--file", data / "small_cnn.pth"]
        + ["--size", 16, "--out", out],
        "report": ["report", data / "run", "--out", out],
    }


def start_held(tmp_path: Path, module: str, function: str, *argv) -> tuple[subprocess.Popen, Path]:
    """`fastclr ARGV` in another process, held inside MODULE.FUNCTION; returns it and its go file."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD, module, function, ready, go, *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.time() + 240
    while not ready.exists():
        if first.poll() is not None or time.time() > deadline:
            first.kill()
            raise AssertionError(f"the first writer never got to {function}: {first.communicate()[0]}")
        time.sleep(0.1)
    return first, go


def finish(first: subprocess.Popen, go: Path) -> str:
    go.touch()
    output, _ = first.communicate(timeout=240)
    assert first.returncode == 0, output
    return output


def test_a_second_conversion_into_an_out_in_use_is_refused_and_the_first_publishes_whole(
    data, tmp_path, run_cli
):
    """Two converts into one --out used to share `.out.partial`: one published the other's tars."""
    out = tmp_path / "o"
    first, go = start_held(
        tmp_path,
        "fastclr.shards._convert",
        "_write_shard",
        *CONVERT,
        "--seed",
        1,
        "--shard-size",
        8,
        "--out",
        out,
    )
    try:
        for second in (commands(data, out)["shards convert"], commands(data, out)["shards subset"]):
            line = one_line_error(*run_cli(*second)[::2])
            assert f"--out {out} is in use by another run (pid {first.pid} on host" in line, line
            assert "fastclr shards convert synthetic" in line and "give this run another --out" in line
    finally:
        output = finish(first, go)
    assert "wrote 40 samples in 5 shards" in output
    assert shards.verify(out)["samples"] == 40
    assert shards.load_manifest(out)["provenance"]["seed"] == 1  # the first's, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "o", "ready"]  # no lock, no partial


def test_a_second_evaluation_into_an_out_in_use_is_refused_and_the_first_results_stay(
    data, tmp_path, run_cli
):
    """Two linear probes into one --out used to overwrite each other's files."""
    out = tmp_path / "lin"
    argv = commands(data, out)["linear"]
    first, go = start_held(tmp_path, "fastclr.trainers._eval", "labelled_pair", *argv, "--seed", 7)
    try:
        for second in (argv, commands(data, out)["knn"]):
            line = one_line_error(*run_cli(*second)[::2])
            assert f"--out {out} is in use by another run (pid {first.pid} on host" in line, line
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        finish(first, go)
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "linear probe (cached features)" and results["settings"]["seed"] == 7
    assert not (out / ".lock").exists()


@pytest.mark.parametrize("command", list(commands(Path(), Path())))
def test_every_command_that_writes_a_folder_refuses_one_in_use(data, tmp_path, run_cli, command):
    out = tmp_path / "out"
    shard_folder = command.startswith("shards")
    held = FolderLock(out, "--out", beside=True) if shard_folder else RunDirLock(out, "--out")
    held.acquire()
    try:
        line = one_line_error(*run_cli(*commands(data, out)[command])[::2])
    finally:
        held.release()
    assert f"--out {out} is in use by another run (pid {os.getpid()} on host" in line, line
    assert not out.exists()


@pytest.mark.parametrize(
    "command", ["linear", "knn", "cluster", "finetune", "supervised", "evaluate", "import-weights", "report"]
)
def test_an_out_that_is_a_shard_folder_is_refused_and_the_shards_stay_whole(data, tmp_path, run_cli, command):
    """`linear --out` equal to `--train` wrote confusion.png and results into the shard set."""
    before = snapshot(data / "train")
    argv = commands(data, data / "train")[command]
    line = one_line_error(*run_cli(*argv)[::2])
    assert f"--out {data / 'train'} is a shard folder (manifest.json, tars)" in line, line
    assert "makes `fastclr shards verify` and every loader refuse it; choose another --out" in line
    assert snapshot(data / "train") == before


@pytest.mark.parametrize("command", ["linear", "shards convert", "shards subset"])
def test_an_out_inside_a_shard_folder_is_refused(data, tmp_path, run_cli, command):
    before = snapshot(data / "train")
    line = one_line_error(*run_cli(*commands(data, data / "train" / "sub")[command])[::2])
    assert f"--out {data / 'train' / 'sub'} is inside the shard folder {data / 'train'}" in line, line
    assert snapshot(data / "train") == before


@pytest.mark.parametrize("command", ["finetune", "linear", "import-weights", "report"])
def test_an_out_that_is_a_pretrain_run_dir_is_refused_and_the_run_stays(data, run_cli, command):
    """finetune appended its epochs to the run's metrics.jsonl; import-weights replaced its encoder."""
    before = snapshot(data / "run")
    line = one_line_error(*run_cli(*commands(data, data / "run")[command])[::2])
    says = "holds the run_dir of a pretrain run (config.yaml, metrics.jsonl, checkpoints/)"
    assert f"--out {data / 'run'} {says}" in line, line
    assert f"choose another --out, such as {data / 'run' / command.replace('-', '_')}" in line, line
    assert snapshot(data / "run") == before


def test_a_run_dir_killed_before_its_first_checkpoint_is_still_a_pretrain_run(data, tmp_path, run_cli):
    run = tmp_path / "killed"
    run.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        (run / name).write_bytes((data / "run" / name).read_bytes())
    before = snapshot(run)
    line = one_line_error(*run_cli(*commands(data, run)["finetune"])[::2])
    assert f"--out {run} holds the run_dir of a pretrain run (config.yaml, metrics.jsonl)" in line, line
    assert snapshot(run) == before


def test_another_evaluation_s_out_is_refused_and_the_same_one_rerun_replaces_its_results(
    data, tmp_path, run_cli
):
    out = tmp_path / "eval"
    assert run_cli(*commands(data, out)["knn"])[0] == 0
    before = snapshot(out)
    for other in ("linear", "finetune", "cluster", "import-weights", "report"):
        line = one_line_error(*run_cli(*commands(data, out)[other])[::2])
        assert f"--out {out} holds the results of another evaluation (knn, results.json)" in line, line
        assert f"not the output of `fastclr {other}`" in line
    assert snapshot(out) == before
    assert run_cli(*commands(data, out)["knn"][:-1], 5)[0] == 0  # the same evaluation, k 5
    assert json.loads((out / "results.json").read_text())["k"] == 5


def test_pretrain_refuses_a_run_dir_that_is_shards_or_another_command_s_output(data, tmp_path, run_cli):
    from test_faults import pretrain_args

    assert run_cli(*commands(data, tmp_path / "enc")["import-weights"])[0] == 0
    for run_dir, says in [
        (data / "train", "is a shard folder (manifest.json, tars)"),
        (tmp_path / "enc", "holds an encoder (encoder.json, encoder.safetensors), not the output of"),
    ]:
        before = snapshot(run_dir)
        line = one_line_error(*run_cli(*pretrain_args(data / "train", run_dir))[::2])
        assert f"run_dir {run_dir} {says}" in line and "choose another run_dir" in line, line
        assert snapshot(run_dir) == before


def test_free_space_is_advised_only_for_a_full_disk(data, tmp_path, run_cli, monkeypatch):
    """A temporary file removed under a writer (by another one, say) is no full disk."""
    assert [write_advice(OSError(code, os.strerror(code))) for code in (errno.ENOSPC, errno.EDQUOT)] == [
        "free space",
        "free space",
    ]
    assert all(
        "free space" not in write_advice(OSError(code, os.strerror(code)))
        for code in (errno.ENOENT, errno.EACCES, errno.EROFS, errno.EIO)
    )

    def removed(path, data):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))

    monkeypatch.setattr(fastclr.shards._convert, "write_json_atomic", removed)
    line = one_line_error(*run_cli(*CONVERT, "--out", tmp_path / "o")[::2])
    assert "cannot write the shards (No such file or directory)" in line and "free space" not in line
    assert "make sure no other process writes or tidies that folder" in line
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(fastclr.trainers._eval_io, "write_atomic", removed)
    line = one_line_error(*run_cli(*commands(data, tmp_path / "lin")["linear"])[::2])
    assert "cannot write (No such file or directory)" in line and "free space" not in line, line


@pytest.mark.parametrize("code, advice", [(errno.ENOSPC, "free space"), (errno.ENOENT, "make sure no other")])
def test_a_failed_checkpoint_advises_free_space_only_for_a_full_disk(tmp_path, monkeypatch, code, advice):
    from types import SimpleNamespace

    from fastclr.trainers import TrainError, _checkpoint, _resume

    def fails(folder, *args):
        try:
            raise OSError(code, os.strerror(code), str(folder / "step-00000001.tmp" / "model.safetensors"))
        except OSError as err:  # as checkpoint.save replaces it
            raise _checkpoint.CheckpointError(f"cannot write checkpoint ({err.strerror})") from None

    monkeypatch.setattr(_checkpoint, "save", fails)
    import torch

    model = torch.nn.Linear(2, 2)  # finite weights: save() checks them before writing
    run = SimpleNamespace(
        run_dir=tmp_path,
        cfg=SimpleNamespace(keep_checkpoints=1),
        loader=SimpleNamespace(state=dict),
        accelerator=SimpleNamespace(unwrap_model=lambda m: m),
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        state=SimpleNamespace(global_step=1),
        latest_checkpoint=lambda: None,
    )
    run.scheduler = run.scaler = run.probe = None
    with pytest.raises(TrainError, match=f"is intact; {advice}") as raised:
        _resume.save(run)
    assert code == errno.ENOSPC or "free space" not in str(raised.value)
