"""Crashes, signals, full disks and peers that die: a rerun ends exactly where an uninterrupted run does.

Every row of RELIABILITY.md's crash and disk table is a test here. Kills come
from tests/fault_run.py, which SIGKILLs the pretrain process at a chosen moment.
"""

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import torchrun
from datasets import write_synthetic_shards
from safetensors.torch import load_file
from test_pretrain import assert_ran_to_step_12, cpu_pretrain_args, losses
from test_shards_bad_input import one_line_error

from fastclr.launch.cli import main
from fastclr.trainers import _checkpoint as checkpoint
from fastclr.trainers import load_encoder

FAULT_RUN = str(Path(__file__).parent / "fault_run.py")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_shards(tmp_path_factory.mktemp("data"), train=96) / "train"


def pretrain_args(data: Path, run: Path, *extra: str) -> list[str]:
    """2 epochs of 6 steps, a checkpoint at steps 6 and 12, only the newest kept."""
    return cpu_pretrain_args(
        data,
        run,
        "epochs=2",
        "batch_size=16",
        "keep_checkpoints=1",
        "model.out_dim=16",
        "optim.name=adam",
        "optim.lr=0.001",
        "optim.lr_scaling=none",
        "optim.warmup_epochs=1",
        *extra,
    )


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run every interrupted one must end equal to."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert main(pretrain_args(data, run)) == 0
    return run


def epoch_losses(run: Path) -> list[float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [m["epoch_loss"] for m in lines if "epoch_loss" in m]


def online_top1(run: Path) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(m["step"], m["online_train_top1"]) for m in lines if "online_train_top1" in m]


def assert_same_as(run: Path, reference: Path) -> None:
    """Same losses and online-probe figures, same encoder bit for bit, a readable export, no leftovers
    of the crash."""
    assert losses(run) == losses(reference) and len(losses(run)) == 12
    assert epoch_losses(run) == epoch_losses(reference)
    assert online_top1(run) == online_top1(reference) and len(online_top1(run)) == 12
    want = load_file(reference / "encoder.safetensors")
    got = load_file(run / "encoder.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    load_encoder(run)  # encoder.json parses and its sha256 matches the weights
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000012"]
    assert [p.name for p in run.rglob(".*")] == []  # no temp file or folder left anywhere


def step_of(path: Path | None) -> int | None:
    return None if path is None else int(path.name.removeprefix(checkpoint.PREFIX))


KILLS = [  # moment, N (see fault_run.py), the checkpoint the rerun must resume from (None: from scratch)
    ("step", 4, None),  # mid-step in epoch 1, before any checkpoint exists
    ("batch", 9, 6),  # mid-epoch 2, while DALI prefetches
    ("checkpoint", 2, 6),  # step 12's model.safetensors half written
    ("rename", 2, 6),  # step 12 complete in its temp folder, not renamed into place
    ("prune", 1, 12),  # half way through deleting step 6 once step 12 is in place
    ("metrics", 8, 6),  # a metrics line torn in half
    ("export", 1, 12),  # encoder.safetensors half written after the last checkpoint
]


@pytest.mark.parametrize("moment, n, resumes_from", KILLS, ids=[k[0] for k in KILLS])
def test_kill_9_then_rerun_ends_equal_to_an_uninterrupted_run(
    data, reference, tmp_path, run_cli, moment, n, resumes_from
):
    run = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, FAULT_RUN, moment, str(n), *pretrain_args(data, run)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert step_of(checkpoint.latest(run / "checkpoints")) == resumes_from
    assert not (run / "encoder.safetensors").exists()  # never a half-written encoder under its real name
    assert (run / ".lock").is_file()  # the dead run's lock: the kernel released it, the file stays

    code, out, err = run_cli(*pretrain_args(data, run))
    assert code == 0, err
    assert f"note: taking over {run / '.lock'}, left by pid " in out  # assert_same_as: then removed
    if resumes_from is None:
        assert "resuming" not in out
    else:
        assert f"at epoch {resumes_from // 6}, step {resumes_from}" in out
    assert_same_as(run, reference)


@pytest.mark.parametrize("n", [1, 4], ids=["epoch-1", "last-epoch"])
def test_a_crash_in_the_knn_monitor_loses_no_epoch(data, tmp_path, run_cli, n):
    """The epoch's checkpoint is written before the monitor builds its loaders; the rerun logs the
    epoch's line, kNN included, as the uninterrupted run did."""
    knn = [f"data.knn_bank={data}", f"data.knn_val={data}", "knn_k=5"]
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert run_cli(*pretrain_args(data, reference, *knn))[0] == 0
    killed = subprocess.run(
        [sys.executable, FAULT_RUN, "knn", str(n), *pretrain_args(data, run, *knn)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert step_of(checkpoint.latest(run / "checkpoints")) == 6 * ((n + 1) // 2)
    code, _, err = run_cli(*pretrain_args(data, run, *knn))
    assert code == 0, err
    assert_same_as(run, reference)
    knn_lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["knn_accuracy"] for r in knn_lines if "epoch_loss" in r] == [
        r["knn_accuracy"]
        for r in map(json.loads, (reference / "metrics.jsonl").read_text().splitlines())
        if "epoch_loss" in r
    ]


def test_another_seed_gives_other_losses(data, reference, tmp_path, run_cli):
    """The other half of determinism (the kills above show same seed -> same losses, across processes)."""
    code, _, err = run_cli(*pretrain_args(data, tmp_path / "run", "seed=1", "max_steps=3"))
    assert code == 0, err
    assert [s for s, _ in losses(tmp_path / "run")] == [1, 2, 3]
    assert losses(tmp_path / "run") != losses(reference)[:3]


def wait_for_metrics(run: Path, proc: subprocess.Popen, lines: int = 2) -> None:
    deadline = time.time() + 120
    path = run / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if path.is_file() and len(path.read_text().splitlines()) >= lines:
            return
        time.sleep(0.1)
    raise AssertionError(f"the run never logged {lines} lines (exit code {proc.poll()})")


def test_sigint_saves_a_checkpoint_and_exits_cleanly_then_resumes(data, tmp_path, run_cli):
    run = tmp_path / "run"
    args = pretrain_args(data, run, "epochs=200")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastclr", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wait_for_metrics(run, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "stopped (signal)" in out and "Traceback" not in out
    stopped_at = step_of(checkpoint.latest(run / "checkpoints"))
    assert stopped_at == losses(run)[-1][0]
    code, out, err = run_cli(*args, f"max_steps={stopped_at + 2}")
    assert code == 0, err
    assert f"step {stopped_at}" in out and losses(run)[-1][0] == stopped_at + 2


FAILED_WRITES = [  # the file whose write fails, the error
    ("model.safetensors", errno.ENOSPC),
    ("model.safetensors", errno.EACCES),
    ("optimizer.pt", errno.ENOSPC),  # torch.save's own file writer said only "unexpected pos"
    ("rng-0.safetensors", errno.ENOSPC),
    ("state.json", errno.ENOSPC),
]


@pytest.mark.parametrize(
    "name, error", FAILED_WRITES, ids=[f"{n}-{errno.errorcode[e]}" for n, e in FAILED_WRITES]
)
def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_previous_one(
    data, reference, tmp_path, run_cli, monkeypatch, name, error
):
    run = tmp_path / "run"
    write_bytes, written = checkpoint.write_bytes, []

    def fail_the_second(path, data):
        if Path(path).name == name:
            written.append(path)
            if len(written) == 2:
                raise OSError(error, os.strerror(error), str(path))
        write_bytes(path, data)

    monkeypatch.setattr(checkpoint, "write_bytes", fail_the_second)
    code, _, err = run_cli(*pretrain_args(data, run))
    line = one_line_error(code, err)
    assert f"cannot write checkpoint {run / 'checkpoints' / 'step-00000012'} ({os.strerror(error)})" in line
    assert f"the previous checkpoint {run / 'checkpoints' / 'step-00000006'} is intact" in line
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000006"]  # no half folder
    monkeypatch.setattr(checkpoint, "write_bytes", write_bytes)
    code, out, err = run_cli(*pretrain_args(data, run))
    assert code == 0 and "at epoch 1, step 6" in out, err
    assert_same_as(run, reference)


def test_a_full_disk_while_exporting_the_encoder_is_one_line_and_the_rerun_exports(
    data, reference, tmp_path, run_cli, monkeypatch
):
    import fastclr.files as files

    run = tmp_path / "run"

    def full(path, mode="r", *args, **kwargs):  # `open` as fastclr.files sees it: the disk fills up
        stream = open(path, mode, *args, **kwargs)
        if Path(path).name == ".encoder.safetensors.tmp":
            write = stream.write

            def write_half(data):
                write(data[: len(data) // 2])  # what a full disk leaves
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

            stream.write = write_half
        return stream

    monkeypatch.setattr(files, "open", full, raising=False)
    code, _, err = run_cli(*pretrain_args(data, run))
    line = one_line_error(code, err)
    assert f"{run / 'encoder.safetensors'}: cannot write (No space left on device)" in line
    assert f"last checkpoint: {run / 'checkpoints' / 'step-00000012'}" in line
    assert not (run / "encoder.safetensors").exists() and [p.name for p in run.rglob(".*")] == []
    monkeypatch.delattr(files, "open")
    code, out, err = run_cli(*pretrain_args(data, run))
    assert code == 0 and "at epoch 2, step 12" in out, err
    assert_same_as(run, reference)


@contextlib.contextmanager
def small_filesystem(folder: Path, size: str):
    """A tmpfs of `size` mounted at `folder` (needs root); unmounted however the test ends."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        # lazy: a failed test's traceback may still hold a file open on it
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


# A checkpoint of this run is 1.9 MB (optimizer.pt 1.25 MB, model.safetensors 0.6 MB), and the second is
# written beside the first. 2300k fills up inside the second's model.safetensors, 3000k inside its
# optimizer.pt: safetensors raised SafetensorError there, torch.save RuntimeError("unexpected pos").
@pytest.mark.skipif(shutil.which("mount") is None, reason="no mount command")
@pytest.mark.parametrize("size, full_at", [("2300k", "model.safetensors"), ("3000k", "optimizer.pt")])
def test_a_real_full_disk_while_checkpointing_is_one_line_and_the_rerun_resumes(
    data, reference, tmp_path, run_cli, monkeypatch, size, full_at
):
    run = tmp_path / "run"
    failed = []
    write_bytes = checkpoint.write_bytes

    def note(path, data):  # only watches which file the filesystem refused
        try:
            write_bytes(path, data)
        except OSError:
            failed.append(Path(path).name)
            raise

    monkeypatch.setattr(checkpoint, "write_bytes", note)
    with small_filesystem(run, size):
        code, _, err = run_cli(*pretrain_args(data, run))
        line = one_line_error(code, err)
        assert failed == [full_at]
        assert f"cannot write checkpoint {run / 'checkpoints' / 'step-00000012'} (No space left" in line
        assert f"the previous checkpoint {run / 'checkpoints' / 'step-00000006'} is intact" in line
        assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000006"]
        assert [p.name for p in run.rglob(".*")] == []  # no temp folder, no lock
        subprocess.run(["mount", "-o", "remount,size=8m", str(run)], check=True)  # space freed
        code, out, err = run_cli(*pretrain_args(data, run))
        assert code == 0 and "at epoch 1, step 6" in out, err
        assert_same_as(run, reference)


@pytest.mark.skipif(shutil.which("mount") is None, reason="no mount command")
def test_a_real_full_disk_while_importing_weights_is_one_line_without_a_temp_file(tmp_path, run_cli):
    from fastclr.encoders import build_encoder

    torch.save(build_encoder("small_cnn").state_dict(), tmp_path / "cnn.pth")  # 0.6 MB as safetensors
    with small_filesystem(tmp_path / "out", "200k") as out:
        code, _, err = run_cli(
            "import-weights",
            "--model",
            "small_cnn",
            "--file",
            tmp_path / "cnn.pth",
            "--size",
            16,
            "--out",
            out,
        )
        line = one_line_error(code, err)
        assert f"{out / 'encoder.safetensors'}: cannot write (No space left on device)" in line
        assert list(out.iterdir()) == []


@pytest.mark.skipif(shutil.which("mount") is None, reason="no mount command")
def test_a_real_full_disk_while_saving_eval_weights_is_one_line_without_a_temp_file(tmp_path):
    from fastclr.trainers import EvalError
    from fastclr.trainers._eval_io import save_weights

    with small_filesystem(tmp_path / "out", "200k") as out:
        with pytest.raises(EvalError, match="model.safetensors: cannot write \\(No space left on device\\)"):
            save_weights(torch.nn.Linear(512, 512), out / "model.safetensors")  # 1 MB
        assert list(out.iterdir()) == []


def test_a_full_disk_while_logging_is_one_line_naming_the_file(data, tmp_path, run_cli, monkeypatch):
    import fastclr.trainers._tracking as tracking

    write, lines = tracking.MetricsLog.write, []

    def fill_up_at_step_8(self, record):
        lines.append(record)
        if len(lines) == 8:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        write(self, record)

    monkeypatch.setattr(tracking.MetricsLog, "write", fill_up_at_step_8)
    code, _, err = run_cli(*pretrain_args(data, tmp_path / "run"))
    line = one_line_error(code, err)
    assert "metrics.jsonl: cannot write (No space left on device)" in line and "step-00000006" in line


def test_recover_puts_back_a_checkpoint_set_aside_and_drops_unfinished_ones(tmp_path):
    """A crash between setting aside step N (saved again) and renaming its replacement in."""
    folder = tmp_path / "checkpoints"
    for name in (".step-00000006.old", ".step-00000012.tmp"):
        (folder / name).mkdir(parents=True)
    (folder / ".step-00000006.old" / "state.json").write_text("{}")
    checkpoint.recover(folder)
    assert [p.name for p in folder.iterdir()] == ["step-00000006"]
    assert checkpoint.latest(folder) == folder / "step-00000006"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any permission bits")
def test_a_read_only_checkpoint_folder_is_one_line_and_keeps_the_previous_one(data, tmp_path, run_cli):
    run = tmp_path / "run"
    assert run_cli(*pretrain_args(data, run, "epochs=1"))[0] == 0
    folder = run / "checkpoints"
    folder.chmod(0o555)
    try:
        code, _, err = run_cli(*pretrain_args(data, run, "epochs=2"))
    finally:
        folder.chmod(0o755)
    assert "Permission denied" in one_line_error(code, err)
    assert [p.name for p in folder.iterdir()] == ["step-00000006"]


def test_a_run_dir_that_cannot_be_made_is_one_line(data, tmp_path, run_cli):
    (tmp_path / "file").write_text("a file where the run folder's parent should be")
    code, _, err = run_cli(*pretrain_args(data, tmp_path / "file" / "run"))
    assert "cannot write there" in one_line_error(code, err)


def test_a_checkpoints_path_that_is_a_file_is_one_line(data, tmp_path, run_cli):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").write_text("not a folder")
    code, _, err = run_cli(*pretrain_args(data, tmp_path / "run"))
    assert "cannot write checkpoint" in one_line_error(code, err)
    assert (tmp_path / "run" / "checkpoints").read_text() == "not a folder"


@pytest.mark.multiproc
def test_a_rank_killed_mid_run_stops_the_other_with_a_clear_error_and_the_rerun_resumes(data, tmp_path):
    run = tmp_path / "run"
    args = [*pretrain_args(data, run, "batch_size=8")]  # 2 ranks x 8: 6 steps per epoch again
    started = time.time()
    killed = torchrun(29543, FAULT_RUN, "step", "9", *args, env={"FAULT_RANK": "1"}, timeout=180)
    out = killed.stdout + killed.stderr
    assert killed.returncode != 0 and time.time() - started < 120, out
    assert "[rank0]: Traceback" not in out, out  # rank 0 explains itself in one line, not a trace
    assert "fastclr: error: process 0 of 2: another process stopped or hung" in out, out
    assert "last checkpoint: " + str(run / "checkpoints" / "step-00000006") in out, out
    second = torchrun(29543, "-m", "fastclr", *args, env={"FAULT_RANK": "1"})
    assert "at epoch 1, step 6" in second.stdout
    assert_ran_to_step_12(second, run)


@pytest.mark.multiproc
def test_a_hung_rank_fails_the_other_after_dist_timeout_instead_of_waiting_30_minutes(data, tmp_path):
    run = tmp_path / "run"
    args = [*pretrain_args(data, run, "batch_size=8", "dist_timeout=10")]
    started = time.time()
    hung = torchrun(29547, FAULT_RUN, "hang", "9", *args, env={"FAULT_RANK": "1"}, timeout=240)
    out = hung.stdout + hung.stderr
    assert hung.returncode != 0 and time.time() - started < 180, out
    assert "fastclr: error: process 0 of 2: another process stopped or hung (dist_timeout 10 s)" in out, out
    assert "last checkpoint: " + str(run / "checkpoints" / "step-00000006") in out, out
