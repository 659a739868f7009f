"""SimCLR pretraining on the CPU: artifacts, exact resume, trackers, config errors, NaN, signals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import torchrun
from datasets import write_synthetic_shards
from omegaconf import OmegaConf
from safetensors.torch import load_file

from fastclr.encoders import build_encoder
from fastclr.trainers import (
    PretrainConfig,
    TrainError,
    _checkpoint,
    _loop,
    _loss,
    build_training,
    create_optimizer,
    create_scheduler,
    new_accelerator,
    nt_xent,
    pretrain,
    train_step,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_shards(tmp_path_factory.mktemp("data"), train=96, test=40)


def config(data, run_dir, **overrides) -> PretrainConfig:
    cfg = PretrainConfig(
        run_dir=str(run_dir),
        epochs=2,
        batch_size=16,
        precision="fp32",
        cpu=True,
        keep_checkpoints=2,
        knn_k=10,
    )
    cfg.data.train, cfg.data.size, cfg.data.num_threads = str(data / "train"), 16, 1
    cfg.model.encoder, cfg.model.hidden_dim, cfg.model.out_dim = "small_cnn", 32, 16
    cfg.optim.name, cfg.optim.lr, cfg.optim.lr_scaling, cfg.optim.warmup_epochs = "adam", 1e-3, "none", 1
    cfg.track.log_every, cfg.track.progress = 1, False
    for key, value in overrides.items():
        target = cfg
        *parents, leaf = key.split("__")
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, leaf, value)
    return cfg


def losses(run_dir: Path) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(m["step"], m["loss"]) for m in lines if "loss" in m]


def test_one_epoch_writes_every_artifact(data, tmp_path):
    cfg = config(
        data, tmp_path / "run", epochs=1, data__knn_bank=str(data / "train"), data__knn_val=str(data / "test")
    )
    summary = pretrain(cfg)
    run = tmp_path / "run"
    assert summary["global_step"] == 6 and summary["stopped"] is None
    written = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(PretrainConfig), OmegaConf.load(run / "config.yaml"))
    )
    assert written == cfg  # config.yaml is the resolved config that trained the encoder
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "lr", "images_per_s", "data_wait"):
        assert all(key in r for r in steps)
    assert 0 <= steps[-1]["data_wait"] <= 1 and steps[-1]["images_per_s"] > 0
    assert 0 <= records[-1]["knn_accuracy"] <= 1 and "epoch_loss" in records[-1]
    # the online probe (on by default, the shards are labelled) and the anchor's k=10 majority kNN
    assert all(0 <= r["online_train_top1"] <= 1 for r in steps)
    assert 0 <= records[-1]["online_val_top1"] <= 1 and 0 <= records[-1]["knn_k10_majority_accuracy"] <= 1
    (checkpoint,) = (run / "checkpoints").iterdir()
    assert checkpoint.name == "step-00000006"
    assert {p.name for p in checkpoint.iterdir()} == {
        "model.safetensors",
        "optimizer.pt",
        "probe.pt",
        "state.json",
        "rank-0.json",
        "rng-0.safetensors",
    }
    info = json.loads((run / "encoder.json").read_text())
    encoder = build_encoder(info["encoder"], info["cifar_stem"], in_chans=info["in_chans"])
    encoder.load_state_dict(load_file(run / "encoder.safetensors"))
    assert info["num_features"] == 128 and info["image_size"] == 16 and len(info["mean"]) == 3


@pytest.mark.parametrize("stop_after", [3, 6, 8])  # mid-epoch, at the epoch's end, mid-epoch 2
def test_an_interrupted_run_resumes_to_the_same_losses(data, tmp_path, stop_after):
    straight = pretrain(config(data, tmp_path / "straight", epochs=3))
    interrupted = pretrain(config(data, tmp_path / "resumed", epochs=3, max_steps=stop_after))
    assert interrupted["stopped"] == "max_steps" and interrupted["global_step"] == stop_after
    resumed = pretrain(config(data, tmp_path / "resumed", epochs=3))
    assert resumed["global_step"] == straight["global_step"] == 18
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    epochs = {}
    for run in ("resumed", "straight"):
        lines = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        epochs[run] = [(r["epoch"], r["epoch_loss"]) for r in lines if "epoch_loss" in r]
    # one record per epoch, averaging the whole epoch (a resumed one too: its sum so far is checkpointed)
    assert epochs["resumed"] == epochs["straight"] and [e for e, _ in epochs["resumed"]] == [0, 1, 2]
    same = load_file(tmp_path / "straight" / "encoder.safetensors")
    for key, value in load_file(tmp_path / "resumed" / "encoder.safetensors").items():
        torch.testing.assert_close(value, same[key])


def test_max_steps_at_the_schedules_end_finishes_the_run(data, tmp_path):
    summary = pretrain(config(data, tmp_path / "run", epochs=2, max_steps=12))
    assert summary["stopped"] is None and summary["epoch"] == 2
    assert (tmp_path / "run" / "encoder.safetensors").is_file()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step-00000006",
        "step-00000012",
    ]


def test_only_the_newest_checkpoints_are_kept(data, tmp_path):
    pretrain(config(data, tmp_path / "run", epochs=3, keep_checkpoints=2))
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step-00000012",
        "step-00000018",
    ]


def test_resume_with_another_world_size_is_refused(data, tmp_path):
    pretrain(config(data, tmp_path / "run", max_steps=2))
    state = next((tmp_path / "run" / "checkpoints").iterdir()) / "state.json"
    saved = json.loads(state.read_text())
    saved["train"]["world_size"] = 2
    state.write_bytes(_checkpoint._seal(saved))  # its checksum made to match: only the count differs
    with pytest.raises(TrainError, match="written by 2 processes, this run has 1"):
        pretrain(config(data, tmp_path / "run"))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(data, tmp_path, monkeypatch):

    calls = []

    def nan_from_step_8(*views, temperature):
        calls.append(1)
        loss = nt_xent(*views, temperature=temperature)
        return loss * float("nan") if len(calls) >= 8 else loss

    monkeypatch.setattr(_loss, "nt_xent", nan_from_step_8)
    with pytest.raises(
        TrainError, match=r"loss became nan by step 8 .*last good checkpoint: .*step-00000006"
    ):
        pretrain(config(data, tmp_path / "run", epochs=3))
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-00000006"]


def test_resume_with_another_model_or_optimizer_is_refused(data, tmp_path):
    pretrain(config(data, tmp_path / "run", max_steps=2))
    with pytest.raises(TrainError, match="optim.name: checkpoint has 'adam', config has 'sgd'"):
        pretrain(config(data, tmp_path / "run", optim__name="sgd"))


def test_train_step_takes_one_forward_per_view_size_and_every_view_into_the_loss(data, tmp_path):
    cfg = config(data, tmp_path / "run")
    training = build_training(cfg, new_accelerator(cpu=True), channels=3, steps_per_epoch=10)
    seen, projections, forward = [], [], training.forward

    def counted(images):
        seen.append(tuple(images.shape))
        features, z = forward(images)
        projections.append(z.detach())
        return features, z

    training.forward = counted
    generator = torch.Generator().manual_seed(0)
    views = [torch.randn(4, 3, 16, 16, generator=generator) for _ in range(3)]
    views += [torch.randn(4, 3, 8, 8, generator=generator) for _ in range(2)]
    loss = train_step(training, views, torch.zeros(4, dtype=torch.long))
    assert seen == [(12, 3, 16, 16), (8, 3, 8, 8)]  # 3 large views together, then the 2 small ones
    # the loss is over five views of four images, each row's positives its image's four other views
    expected = nt_xent(*torch.cat(projections).chunk(5), temperature=0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() != pytest.approx(nt_xent(*torch.cat(projections).chunk(2), temperature=0.5).item())


def test_n_views_and_small_views_pretrain_and_a_resume_must_keep_them(data, tmp_path, monkeypatch):

    shapes, step = [], _loop.train_step

    def recorded(training, views, labels):
        shapes.append([tuple(v.shape) for v in views])
        return step(training, views, labels)

    monkeypatch.setattr(_loop, "train_step", recorded)
    views = dict(data__views=3, data__small_views=2, data__small_size=8)
    summary = pretrain(config(data, tmp_path / "run", max_steps=2, **views))
    assert summary["global_step"] == 2
    assert shapes == [[(16, 3, 16, 16)] * 3 + [(16, 3, 8, 8)] * 2] * 2
    with pytest.raises(TrainError, match=r"data.views: checkpoint has 3, config has 2"):
        pretrain(config(data, tmp_path / "run", **{**views, "data__views": 2}))


def test_wandb_offline_run_folder_is_created(data, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in, so offline
    pretrain(config(data, tmp_path / "run", max_steps=2, track__wandb=True, track__tags=["test"]))
    assert "WANDB_MODE" not in os.environ  # offline through wandb.init: the environment stays as it was
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_tensorboard_events_are_written(data, tmp_path):
    pretrain(config(data, tmp_path / "run", max_steps=2, track__tensorboard=True))
    events = list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_the_lr_follows_warmup_then_cosine_once_per_optimizer_step(data, tmp_path):
    pretrain(config(data, tmp_path / "run", epochs=2, optim__warmup_epochs=1))
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [m["lr"] for m in logged if "lr" in m]
    assert lrs[:6] == pytest.approx([1e-3 * k / 6 for k in range(1, 7)])  # warm-up over epoch 1
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and all(
        a >= b for a, b in zip(lrs[5:], lrs[6:], strict=False)
    )


def test_lars_neither_decays_nor_adapts_norms_and_biases():
    model = build_encoder("resnet18", cifar_stem=True)
    optimizer = create_optimizer(model, "lars", 1.0, 1e-6, 0.9)
    decayed = next(g for g in optimizer.param_groups if g["weight_decay"] > 0)
    plain = next(g for g in optimizer.param_groups if g["weight_decay"] == 0)
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim <= 1 for p in plain["params"])
    assert not plain["always_adapt"] and type(optimizer).__module__ == "fastclr.trainers._lars"
    scheduler = create_scheduler(optimizer, total_steps=100, warmup_steps=10, min_lr=0.0)
    scheduler.step_update(5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)


def test_resnet18_with_cifar_stem_trains_a_step(data, tmp_path):
    summary = pretrain(
        config(
            data,
            tmp_path / "run",
            max_steps=1,
            model__encoder="resnet18",
            model__cifar_stem=True,
            model__hidden_dim=64,
        )
    )
    assert summary["global_step"] == 1


def run_fastclr(*args, env=None, **kw):
    return subprocess.run(
        [sys.executable, "-m", "fastclr", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )


def test_a_bad_config_key_fails_fast_naming_the_valid_keys(data, tmp_path, run_cli):
    code, _, err = run_cli("pretrain", f"data.train={data / 'train'}", "optim.lrr=0.1")
    assert code == 1 and "unknown config key 'optim.lrr'" in err and "lr, lr_scaling" in err
    code, _, err = run_cli("pretrain", f"data.train={data / 'train'}", "precision=fp8")
    assert code == 1 and "precision='fp8' is not valid; choose one of: auto, bf16, fp16, fp32" in err
    code, _, err = run_cli("pretrain", f"data.train={data / 'train'}", "data.augment.jiter_p=0.1")
    assert code == 1 and "unknown augmentation parameter 'jiter_p'" in err
    code, _, err = run_cli("pretrain", "epochs=1")
    assert code == 1 and "config data.train is required" in err
    code, _, err = run_cli("pretrain", f"data.train={tmp_path / 'nothing'}")
    assert code == 1 and "no such shard folder" in err
    (tmp_path / "c.yaml").write_text("model:\n  heads: mlp_bn\n")
    code, _, err = run_cli("pretrain", "--config", tmp_path / "c.yaml")
    assert code == 1 and "unknown config key 'model.heads'" in err and "head, hidden_dim" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.views=1", "config data.views=1 must be at least 2"),
        ("data.small_views=-1", "config data.small_views=-1 must be 0 (none) or more"),
        ("data.small_views=2", "config data.small_size=16 must be in 1..data.size-1 (15)"),
        ("data.small_crop_scale=[0.5]", "config data.small_crop_scale=[0.5] must be [min, max]"),
    ],
)
def test_bad_view_settings_fail_before_anything_starts(data, tmp_path, run_cli, override, message):
    run = tmp_path / "run"
    code, _, err = run_cli(
        "pretrain", f"data.train={data / 'train'}", "data.size=16", f"run_dir={run}", override
    )
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert not run.exists()


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly_then_resumes(data, tmp_path):
    run = tmp_path / "run"
    args = cpu_pretrain_args(
        data / "train", run, "epochs=200", "batch_size=16", "optim.name=adam", "optim.lr=0.001"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastclr", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.jsonl").is_file():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "stopped (signal)" in out and "run the same command again to resume" in out
    saved = json.loads((sorted((run / "checkpoints").iterdir())[-1] / "state.json").read_text())
    stopped_at = saved["train"]["global_step"]
    assert stopped_at == losses(run)[-1][0]
    result = run_fastclr(*args, f"max_steps={stopped_at + 2}", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"at epoch {saved['train']['epoch']}, step {stopped_at}" in result.stdout
    assert losses(run)[-1][0] == stopped_at + 2


def cpu_pretrain_args(train: Path, run: Path, *settings: str) -> list[str]:
    """`pretrain` of the TRAIN shards on the CPU: small_cnn at 16 pixels in fp32, a step a log line,
    no progress bar; SETTINGS last (they win)."""
    return [
        "pretrain",
        f"data.train={train}",
        f"run_dir={run}",
        "precision=fp32",
        "cpu=true",
        "data.size=16",
        "data.num_threads=1",
        "model.encoder=small_cnn",
        "model.hidden_dim=32",
        "track.log_every=1",
        "track.progress=false",
        *settings,
    ]


def two_process_pretrain(data: Path, run: Path, *settings: str) -> list[str]:
    """A small CPU pretrain for 2 processes: 96 images at batch 8 a process make 6 steps an epoch,
    2 epochs (epochs below warm-up are refused, hence one warm-up epoch)."""
    return cpu_pretrain_args(
        data / "train", run, "epochs=2", "batch_size=8", "optim.warmup_epochs=1", *settings
    )


def assert_ran_to_step_12(done, run: Path) -> None:
    """DONE (a finished process) ended the 2 epochs of 6 steps, and RUN's metrics hold each step once."""
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done: 2 epochs, 12 steps" in done.stdout
    assert [step for step, _ in losses(run)] == list(range(1, 13))


@pytest.mark.multiproc
def test_two_processes_gather_negatives_checkpoint_per_rank_and_resume(data, tmp_path):
    run = tmp_path / "run"
    args = ["-m", "fastclr", *two_process_pretrain(data, run, "optim.name=adam", "optim.lr=0.001")]
    first = torchrun(29541, *args, "max_steps=4")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "global batch 16, 2 views each: 30 negatives per anchor" in first.stdout
    (checkpoint,) = (run / "checkpoints").iterdir()
    assert {"rank-0.json", "rank-1.json", "rng-0.safetensors", "rng-1.safetensors"} <= {
        p.name for p in checkpoint.iterdir()
    }
    second = torchrun(29541, *args)
    assert "resuming" in second.stdout
    assert_ran_to_step_12(second, run)


@pytest.mark.multiproc
def test_two_processes_read_no_tensor_to_the_host_between_log_steps(data, tmp_path):
    """The stop flag is agreed on at log steps and epoch ends only: no host read in the other steps."""
    out = tmp_path / "reads.json"
    settings = two_process_pretrain(
        data,
        tmp_path / "run",
        "optim.name=lars",  # torch's Adam keeps its step count in a CPU tensor and reads it
        "online_probe=true",  # its counters are read at log steps only, its gradients averaged each step
        "track.log_every=4",
    )
    result = torchrun(29543, Path(__file__).parent / "host_reads_run.py", out, *settings)
    assert result.returncode == 0, result.stdout + result.stderr
    sync_points = {4, 6, 8, 12}  # log steps, and each epoch's last step
    for rank in (0, 1):
        counted = json.loads(Path(f"{out}.{rank}").read_text())
        assert counted["steps"] == 12
        read_at = {int(step) for step, n in counted["reads"].items() if int(step) > 0}  # 0: setup
        assert read_at <= sync_points, (
            f"rank {rank} read tensors to the host in steps {read_at - sync_points}"
        )


def test_each_tar_is_hashed_at_most_once_in_a_run_with_the_knn_monitor(data, tmp_path, monkeypatch):
    """The shard check (a sha256 of every tar) runs once per folder per run: the setup, the
    training loader and the kNN monitor's loaders every epoch share the opened folders."""
    from fastclr.shards import _verify

    hashed, sha256_file = {}, _verify.sha256_file

    def counted(path):
        hashed[str(path)] = hashed.get(str(path), 0) + 1
        return sha256_file(path)

    monkeypatch.setattr(_verify, "sha256_file", counted)
    bank = str(data / "train")  # the train folder is also the kNN bank: still checked once
    pretrain(config(data, tmp_path / "run", epochs=2, data__knn_bank=bank, data__knn_val=str(data / "test")))
    tars = {p: n for p, n in hashed.items() if p.endswith(".tar")}
    assert set(tars) == {str(p) for p in (data / "train").glob("*.tar")} | {
        str(p) for p in (data / "test").glob("*.tar")
    }
    assert set(tars.values()) == {1}, tars
