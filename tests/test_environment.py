"""Nothing rewrites the process environment while a DALI pipeline is alive.

DALI's decoder threads read the environment (libjpeg-turbo calls getenv for every JPEG it
decodes), and libc's getenv is not safe against a concurrent setenv or unsetenv: the environment
array may move under the reader. Accelerate's `accelerator.autocast()` used to rewrite the whole
environment at every step, and CPU runs on JPEG shards died of a segmentation fault in about half
of the runs. These tests wrap os.putenv and os.unsetenv (what os.environ writes through) and fail
on any call made while a pipeline exists, through a pretrain with every tracker and the kNN monitor,
then a linear and a kNN evaluation in the same process, as `fastclr run` chains them.
"""

import os
import traceback
import weakref

import pytest
import wandb
from datasets import write_synthetic_shards

from fastclr import trainers
from fastclr.trainers import PretrainConfig


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory):
    return write_synthetic_shards(tmp_path_factory.mktemp("jpeg"), train=64, test=32)


@pytest.fixture
def environment_writes(monkeypatch):
    """The os.putenv / os.unsetenv calls made while a built DALI pipeline is alive, with their stacks."""
    from nvidia.dali.pipeline import Pipeline

    alive = weakref.WeakSet()
    build = Pipeline.build

    def tracked_build(self, *args, **kwargs):
        alive.add(self)
        return build(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "build", tracked_build)
    writes = []

    def guard(name):
        original = getattr(os, name)

        def wrapped(*args):
            if len(alive):
                writes.append(
                    f"os.{name}{args[:1]} with {len(alive)} pipeline(s) alive:\n"
                    + "".join(traceback.format_stack(limit=12))
                )
            return original(*args)

        monkeypatch.setattr(os, name, wrapped)

    guard("putenv")
    guard("unsetenv")
    return writes


def test_no_environment_write_while_a_pipeline_lives(jpeg, tmp_path, monkeypatch, environment_writes):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # not logged in: the offline switch must not use it
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = PretrainConfig(run_dir=str(tmp_path / "run"), epochs=2, batch_size=16, precision="fp32", cpu=True)
    cfg.data.train, cfg.data.knn_bank, cfg.data.knn_val = (str(jpeg / s) for s in ("train", "train", "test"))
    cfg.data.size, cfg.data.num_threads = 16, 2
    cfg.model.encoder, cfg.model.hidden_dim, cfg.model.out_dim = "small_cnn", 32, 16
    cfg.optim.name, cfg.optim.lr, cfg.optim.lr_scaling, cfg.optim.warmup_epochs = "adam", 1e-3, "none", 1
    cfg.knn_k, cfg.track.log_every, cfg.track.progress = 10, 2, False
    cfg.track.wandb = cfg.track.tensorboard = True
    wandb.teardown()  # each command starts W&B's service itself, as in a fresh process
    trainers.pretrain(cfg)
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*")), "W&B did not run offline"
    run = tmp_path / "run"
    wandb.teardown()
    inputs = {"encoder": str(run), "train": str(jpeg / "train"), "val": str(jpeg / "test")}
    trainers.linear(trainers.LinearConfig(**inputs, out=str(tmp_path / "linear"), epochs=5, wandb=True))
    wandb.teardown()
    trainers.knn(trainers.KnnConfig(**inputs, out=str(tmp_path / "knn"), k=5, wandb=True, tensorboard=True))
    assert not environment_writes, "\n".join(environment_writes)
