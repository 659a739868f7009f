"""One run per run_dir, and a run_dir that always says what trained its encoder.

A second run in a busy run_dir and a launch whose processes never formed a
process group are refused (torchrun's processes on a machine without GPUs form
a CPU one); a lock left by a dead run is taken over; a resumed
run may change only logging, monitoring and checkpoint settings; a warm-up
longer than the run is refused.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import torchrun
from datasets import write_synthetic_shards
from test_faults import pretrain_args, wait_for_metrics
from test_shards_bad_input import one_line_error

import fastclr.files as lock_module
from fastclr import shards
from fastclr.config import check_settings
from fastclr.launch._demo import demo_config
from fastclr.trainers._lock import LOCK, RunDirError, RunDirLock


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_shards(tmp_path_factory.mktemp("data"), train=96) / "train"


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_a_second_run_in_a_busy_run_dir_is_refused_naming_the_first(data, tmp_path, run_cli):
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "fastclr", *pretrain_args(data, run, "epochs=200")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_metrics(run, first)
        code, _, err = run_cli(*pretrain_args(data, run, "epochs=200"))
        line = one_line_error(code, err)
        assert (
            f"run_dir {run} is in use by another run (pid {first.pid} on host {socket.gethostname()}" in line
        )
        assert "fastclr pretrain data.train=" in line and "give this run another run_dir" in line
        logged = len((run / "metrics.jsonl").read_text().splitlines())
        wait_for_metrics(run, first, logged + 2)  # the first run goes on, its files untouched
    finally:
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and "stopped (signal)" in out, out
    assert not (run / LOCK).exists()  # released at the end


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    holder = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from trainers._lock import RunDirLock; "
            "RunDirLock(sys.argv[1]).acquire(); os.kill(os.getpid(), signal.SIGKILL)",
            str(tmp_path / "run"),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert holder.returncode == -signal.SIGKILL
    left = json.loads((tmp_path / "run" / LOCK).read_text())
    lock = RunDirLock(tmp_path / "run")
    assert left["pid"] != os.getpid() and lock.acquire()["pid"] == left["pid"]
    assert json.loads((tmp_path / "run" / LOCK).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "run" / LOCK).exists()


def test_a_second_lock_in_one_process_is_refused_and_release_removes_what_acquire_made(tmp_path):
    first, second = RunDirLock(tmp_path / "run"), RunDirLock(tmp_path / "run")
    assert first.acquire() is None
    with pytest.raises(RunDirError, match=f"pid {os.getpid()} on host"):
        second.acquire()
    first.release()
    assert not (tmp_path / "run").exists()  # made by acquire and still empty: a refused run leaves nothing
    assert second.acquire() is None
    (tmp_path / "run" / "config.yaml").write_text("kept")
    second.release()
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["config.yaml"]


@pytest.fixture
def no_locks(monkeypatch):
    """A filesystem without flock (NFS without a lock manager, Lustre mounted noflock)."""
    import errno

    def flock(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock_module.fcntl, "flock", flock)


def write_holder(run: Path, host: str, pid: int) -> None:
    run.mkdir()
    (run / LOCK).write_text(json.dumps({"host": host, "pid": pid, "started": "then", "command": "fastclr x"}))


def test_without_locks_a_dead_holder_on_this_host_is_taken_over(tmp_path, no_locks):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    write_holder(tmp_path / "run", socket.gethostname(), int(dead.stdout))
    lock = RunDirLock(tmp_path / "run")
    assert lock.acquire()["pid"] == int(dead.stdout)
    lock.release()


def test_without_locks_a_live_holder_on_this_host_is_refused(tmp_path, no_locks):
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_holder(tmp_path / "run", socket.gethostname(), alive.pid)
        with pytest.raises(RunDirError, match=f"in use by another run \\(pid {alive.pid} on host"):
            RunDirLock(tmp_path / "run").acquire()
    finally:
        alive.kill()
        alive.wait()


def test_without_locks_a_holder_on_another_host_is_refused_saying_how_to_remove_it(tmp_path, no_locks):
    write_holder(tmp_path / "run", "node-7", 123)
    with pytest.raises(RunDirError, match="no locks to tell whether that run still goes on") as refused:
        RunDirLock(tmp_path / "run").acquire()
    assert f"if it has ended, delete {tmp_path / 'run' / LOCK} and run again" in str(refused.value)
    assert "pid 123 on host node-7" in str(refused.value)


def test_processes_launched_as_several_but_running_alone_are_refused(data, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = run_cli(*pretrain_args(data, tmp_path / "run", "cpu=false"))
    line = one_line_error(code, err)
    assert "the launcher started 2 processes but this one runs alone (1 in its process group)" in line
    assert "add cpu=true" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.multiproc
def test_torchrun_on_a_machine_without_gpus_forms_a_cpu_process_group_by_itself(data, tmp_path):
    """Without cpu=true torchrun's processes once ran as two one-process jobs in one folder; now they
    join one gloo group: one run, a global batch of both processes, one start line."""
    argv = ("batch_size=8", "epochs=1", "max_steps=2")
    args = [a for a in pretrain_args(data, tmp_path / "run", *argv) if a != "cpu=true"]
    result = torchrun(29551, "-m", "fastclr", *args, env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("global batch 16, 2 views each: 30 negatives per anchor") == 1, result.stdout
    assert "precision fp32 on cpu" in result.stdout


def finish(run_cli, data, run, *extra):
    code, out, err = run_cli(*pretrain_args(data, run, *extra))
    assert code == 0, err
    return out


def test_a_finished_run_started_again_with_other_settings_is_refused_naming_them(data, tmp_path, run_cli):
    run = tmp_path / "run"
    finish(run_cli, data, run)
    before = snapshot(run)
    code, _, err = run_cli(*pretrain_args(data, run, "temperature=0.2", "optim.lr=0.01"))
    line = one_line_error(code, err)
    assert f"{run / 'checkpoints' / 'step-00000012'} was trained with other settings (" in line
    assert "optim.lr: checkpoint has 0.001, config has 0.01; temperature: checkpoint has 0.5" in line
    assert "a resumed run may change only run_dir, max_steps" in line and "track.*" in line
    assert snapshot(run) == before  # config.yaml still says what trained the encoder
    code, _, err = run_cli(*pretrain_args(data, run, "epochs=3"))  # the schedule would not stretch
    assert "epochs: checkpoint has 2, config has 3" in one_line_error(code, err)
    assert snapshot(run) == before


def test_a_resumed_run_may_change_logging_and_checkpoint_settings(data, tmp_path, run_cli):
    run = tmp_path / "run"
    finish(run_cli, data, run, "max_steps=3")
    out = finish(run_cli, data, run, "track.log_every=2", "keep_checkpoints=2", "dist_timeout=60")
    assert "resuming" in out and "done: 2 epochs, 12 steps" in out
    assert "log_every: 2" in (run / "config.yaml").read_text()
    code, _, err = run_cli(*pretrain_args(data, run, "data.augment.jitter_p=0.5"))
    assert "data.augment.jitter_p: checkpoint has None, config has 0.5" in one_line_error(code, err)


def test_an_unfinished_run_resumed_with_another_lr_is_refused(data, tmp_path, run_cli):
    run = tmp_path / "run"
    finish(run_cli, data, run, "max_steps=3")
    config = (run / "config.yaml").read_text()
    code, _, err = run_cli(*pretrain_args(data, run, "optim.lr=0.01"))
    assert "optim.lr: checkpoint has 0.001, config has 0.01" in one_line_error(code, err)
    assert (run / "config.yaml").read_text() == config


def test_other_shards_under_the_same_path_are_refused(data, tmp_path, run_cli):
    other = tmp_path / "train"
    source = shards.open_source("synthetic", None, "train", num=96, size=16, classes=4, seed=6)
    shards.convert(source, other, shard_size=32, progress=False)
    finish(run_cli, data, tmp_path / "run", "max_steps=3")
    code, _, err = run_cli(*pretrain_args(other, tmp_path / "run"))
    assert "data.train manifest sha256: checkpoint has" in one_line_error(code, err)


def test_a_warm_up_longer_than_the_run_is_refused_with_the_fix(data, tmp_path, run_cli):
    code, _, err = run_cli(*pretrain_args(data, tmp_path / "run", "epochs=5", "optim.warmup_epochs=10"))
    line = one_line_error(code, err)
    assert "optim.warmup_epochs=10 is more than epochs=5, so the run would never leave warm-up" in line
    assert "refused: set optim.warmup_epochs=0.5" in line
    assert not (tmp_path / "run").exists()
    for epochs in (2, 150):  # the demo scales its warm-up to short runs
        check_settings(demo_config({"train": "", "train-10pct": "", "test": ""}, tmp_path, epochs))


@pytest.mark.multiproc
def test_a_busy_run_dir_refuses_every_rank_of_a_process_group_at_once(data, tmp_path):
    """Rank 0 tries the lock and tells the others: no rank waits in a collective for one that left."""
    held = RunDirLock(tmp_path / "run")
    held.acquire()
    try:
        args = pretrain_args(data, tmp_path / "run", "batch_size=8", "dist_timeout=60")
        result = torchrun(29553, "-m", "fastclr", *args)
    finally:
        held.release()
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "trainers/" not in out, out
    assert (
        out.count(f"fastclr: error: run_dir {tmp_path / 'run'} is in use by another run (pid {os.getpid()}")
        == 2
    )


@pytest.mark.parametrize(
    "command",
    [
        ["finetune", "--encoder", "nowhere"],
        ["supervised", "--model", "small_cnn", "--size", "16"],
    ],
    ids=["finetune", "supervised"],
)
def test_finetune_and_supervised_refuse_an_out_folder_in_use(data, tmp_path, run_cli, command):
    """They write metrics.jsonl and weights into --out: one run there at a time, like pretrain."""
    held = RunDirLock(tmp_path / "out")
    held.acquire()
    try:
        code, _, err = run_cli(*command, "--train", data, "--val", data, "--out", tmp_path / "out", "--cpu")
    finally:
        held.release()
    line = one_line_error(code, err)
    assert f"--out {tmp_path / 'out'} is in use by another run (pid {os.getpid()}" in line
    assert "give this run another --out" in line


def test_a_checkpoint_from_before_settings_were_recorded_checks_the_keys_it_has(data, tmp_path):
    """Older checkpoints kept only model, optimiser, batch and data fraction under `fixed`."""
    from test_pretrain import config

    from fastclr.trainers import TrainError, pretrain

    cfg = config(data.parent, tmp_path / "run", max_steps=2)
    pretrain(cfg)
    (state_file,) = (tmp_path / "run" / "checkpoints").glob("*/state.json")
    saved = json.loads(state_file.read_text())
    del saved["train"]["settings"], saved["train"]["epoch_loss_sum"], saved["files"], saved["sha256"]
    saved["train"]["fixed"] = {"model": {"encoder": "small_cnn"}, "optim.name": "adam", "batch_size": 16}
    state_file.write_text(json.dumps(saved))
    with pytest.raises(TrainError, match="optim.name: checkpoint has 'adam', config has 'sgd'"):
        pretrain(config(data.parent, tmp_path / "run", optim__name="sgd"))
    assert pretrain(config(data.parent, tmp_path / "run", optim__lr=0.01))["global_step"] == 12
