"""Run `fastclr ARGS...` and SIGKILL this process at one chosen moment (for tests/test_faults.py).

    python tests/fault_run.py MOMENT N fastclr-args...

The kill comes from inside, at a precise point, the way a power cut or the OOM
killer would end the run; nothing in fastclr knows about it. Moments (N counts
calls from 1):
  step        inside the Nth loss computation (mid-step: batch taken, no optimiser step yet)
  hang        the same moment, but SIGSTOP: the process stays, silent (a hung peer)
  batch       while the Nth batch is taken out of DALI (mid-epoch, DALI threads running)
  checkpoint  the Nth checkpoint's model.safetensors half written
  rename      the Nth checkpoint complete in its temp folder, not yet renamed into place
  prune       half way through deleting the Nth old checkpoint (the Nth folder deleted whole)
  metrics     the Nth metrics.jsonl line half written
  export      encoder.safetensors half written (N is ignored)
  knn         inside the Nth feature extraction of the kNN monitor (its epoch's checkpoint written)
With FAULT_RANK set, only the torchrun process of that RANK arms the kill.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def tear(path: str | Path) -> None:
    """Cut a file in half, as a crash mid-write leaves it."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def arm(moment: str, n: int) -> None:
    import fastclr.pipelines._loader as loader
    import fastclr.trainers._checkpoint as checkpoint
    import fastclr.trainers._encoder_file as encoder_file
    import fastclr.trainers._loss as loss_module
    import fastclr.trainers._monitor as monitor
    import fastclr.trainers._tracking as tracking

    calls = {"n": 0}

    def hit() -> bool:
        calls["n"] += 1
        return calls["n"] == n

    if moment in ("step", "hang"):
        nt_xent = loss_module.nt_xent

        def loss(*args, **kwargs):
            if hit():
                die() if moment == "step" else os.kill(os.getpid(), signal.SIGSTOP)
            return nt_xent(*args, **kwargs)

        loss_module.nt_xent = loss
    elif moment == "batch":
        labels = loader.DaliLoader._labels

        def take(self, padded):  # once a batch, its views already copied out of DALI
            if self.mode == "pretrain" and hit():
                die()
            return labels(self, padded)

        loader.DaliLoader._labels = take
    elif moment == "checkpoint":
        write = checkpoint.write_bytes

        def save(path, data):
            write(path, data)
            if Path(path).name == "model.safetensors" and hit():
                tear(path)
                die()

        checkpoint.write_bytes = save
    elif moment == "export":

        def killed_writing(path, data):  # the weights' temporary file (write_atomic's) half written
            path = Path(path)
            (path.parent / f".{path.name}.tmp").write_bytes(data[: len(data) // 2])
            die()

        encoder_file.write_atomic = killed_writing
    elif moment == "rename":
        replace = os.replace

        def rename(src, dst):
            if Path(src).name.endswith(".tmp") and Path(src).name.startswith(".step-") and hit():
                die()
            replace(src, dst)

        checkpoint.os.replace = rename
    elif moment == "prune":
        rmtree = checkpoint.shutil.rmtree

        def half_rmtree(path, *args, **kwargs):  # a whole checkpoint's folder, as pruning deletes it
            path = Path(path)
            if (path / "state.json").is_file() and hit():
                (path / "state.json").unlink()
                (path / "model.safetensors").unlink()
                die()
            rmtree(path, *args, **kwargs)

        checkpoint.shutil.rmtree = half_rmtree
    elif moment == "metrics":
        write = tracking.MetricsLog.write

        def torn_write(self, record):
            if self.enabled and hit():
                line = tracking.json.dumps(record) + "\n"
                with open(self.path, "a") as f:
                    f.write(line[: len(line) // 2])
                die()
            write(self, record)

        tracking.MetricsLog.write = torn_write
    elif moment == "knn":
        extract = monitor.extract_features

        def extract_features(*args, **kwargs):
            if hit():
                die()
            return extract(*args, **kwargs)

        monitor.extract_features = extract_features
    else:
        raise SystemExit(f"fault_run: unknown moment {moment!r}")


if __name__ == "__main__":
    moment, count, *argv = sys.argv[1:]
    if os.environ.get("FAULT_RANK", os.environ.get("RANK", "0")) == os.environ.get("RANK", "0"):
        arm(moment, int(count))
    from fastclr.launch.cli import main

    sys.exit(main(argv))
