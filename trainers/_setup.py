"""Building a pretrain run: the Accelerator, the shards, the model and optimiser, the schedule, the
newest checkpoint that can be resumed if there is one, the trackers and the loader, in that order.

The order matters: the checkpoint is loaded into a model and optimiser that already exist, and the
loader is built last, from the checkpoint's position; trackers start before it because starting
W&B writes the environment, which must not change once DALI's threads run. When DALI refuses the
position, an older checkpoint is resumed instead; only then are damaged ones set aside.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from omegaconf import OmegaConf

from fastclr import shards
from fastclr.encoders import SimCLRModel, build_encoder, build_head
from fastclr.pipelines import PositionError, ShardSet, create_loader, open_shards, train_steps
from fastclr.trainers import _checkpoint as checkpoint
from fastclr.trainers._config import PretrainConfig
from fastclr.trainers._errors import TrainError
from fastclr.trainers._faults import first_failure
from fastclr.trainers._losses import create_loss
from fastclr.trainers._optim import create_optimizer, create_scheduler, scaled_lr
from fastclr.trainers._probe import OnlineProbe, create_probe
from fastclr.trainers._resume import Resumed, flatten, resume, resume_settings, set_aside
from fastclr.trainers._tracking import (
    MetricsLog,
    autocast_context,
    new_accelerator,
    new_run_id,
    start_trackers,
    trackers,
    wandb_init_kwargs,
)

# The loader's image dtype on a GPU (on the CPU: float32, which its operators compute in).
INPUT_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclasses.dataclass
class Training:
    """What one pretrain step needs (trainers/_loop.py); bench/train.py builds one without a Run."""

    cfg: PretrainConfig
    accelerator: Accelerator
    model: torch.nn.Module  # prepared by Accelerate (DDP on several GPUs)
    forward: torch.nn.Module  # the model, compiled when cfg.compile
    optimizer: torch.optim.Optimizer
    scheduler: object  # timm scheduler, stepped per optimiser step
    scaler: torch.amp.GradScaler | None  # fp16 only
    criterion: object  # trainers/_losses.py
    autocast: Callable  # zero-argument context manager (trainers/_tracking.py)
    probe: OnlineProbe | None
    state: checkpoint.TrainState
    lr: float  # the batch-scaled base rate
    step: Callable[..., torch.Tensor] | None = None  # trainers/_loop.py build_step's


@dataclasses.dataclass
class Run(Training):
    """One pretrain run, resumed or fresh: what the loop reads and updates."""

    metrics: MetricsLog | None = None
    shards: ShardSet | None = None  # trained on (a subset in run_dir when data.fraction < 1)
    knn_bank: ShardSet | None = None  # the kNN monitor's labelled bank and held-out queries
    knn_val: ShardSet | None = None
    channels: int = 3
    steps_per_epoch: int = 0  # optimiser steps
    global_batch: int = 0
    loader: object = None  # pipelines.DaliLoader of the pretrain graph
    saved: Path | None = None  # the checkpoint this run wrote last
    resumed_from: Path | None = None  # the checkpoint it started from, verified (None: fresh weights)

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run_dir)

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint known good: the one this run wrote last, else the one it resumed."""
        return self.saved or self.resumed_from

    def make_loader(self, mode: str, data: ShardSet, **extra):
        """A loader of `data` with this run's batch, size, device, dtype, threads and seed."""
        cfg, accelerator = self.cfg, self.accelerator
        gpu = accelerator.device.type == "cuda"
        return create_loader(
            mode,
            data,
            batch_size=cfg.batch_size,
            size=cfg.data.size,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
            device=accelerator.device,
            dtype=INPUT_DTYPE[cfg.precision] if gpu else torch.float32,
            channels_last=cfg.channels_last,
            channels=cfg.data.channels,
            num_threads=cfg.data.num_threads,
            prefetch=cfg.data.prefetch,
            augment_device=cfg.data.augment_device,
            seed=cfg.seed,
            **extra,
        )

    def log(self, record: dict) -> None:
        """To metrics.jsonl and the trackers."""
        self.metrics.write(record)
        self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])


def build_model(cfg: PretrainConfig, channels: int) -> SimCLRModel:
    encoder = build_encoder(
        cfg.model.encoder, cfg.model.cifar_stem, cfg.model.pretrained_file, in_chans=channels
    )
    head = build_head(cfg.model.head, encoder.num_features, cfg.model.hidden_dim, cfg.model.out_dim)
    return SimCLRModel(encoder, head)


def build_training(
    cfg: PretrainConfig,
    accelerator: Accelerator,
    channels: int,
    steps_per_epoch: int,
    manifest: dict | None = None,
) -> Training:
    """The model (SyncBN across GPUs, channels_last, compiled when `cfg.compile`), its optimiser at
    the batch-scaled rate, prepared by Accelerate, the schedule over `steps_per_epoch` optimiser steps,
    the criterion, autocast, the fp16 loss scaler and (with labelled `manifest`) the online probe.
    `cfg`'s automatic choices (precision, warm-up) are made here for this accelerator's device."""
    cfg = cfg.resolved(accelerator.device.type == "cuda")
    global_batch = cfg.batch_size * accelerator.num_processes * cfg.grad_accum
    lr = scaled_lr(cfg.optim.lr, global_batch, cfg.optim.lr_scaling)
    model = build_model(cfg, channels)
    if model.encoder.load_report and accelerator.is_main_process:
        report = model.encoder.load_report
        accelerator.print(
            f"pretrained weights: {len(report['loaded'])} tensors loaded; not matched: "
            f"{report['missing'] + report['shape_mismatch'] or 'none'}"
        )
    if cfg.sync_bn and accelerator.num_processes > 1:
        # per-rank BatchNorm statistics would let each GPU's small batch tell its own samples apart
        if accelerator.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            accelerator.print(
                "note: SyncBatchNorm needs GPUs; on CPU processes each keep their own BN statistics"
            )
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model, cfg.optim.name, lr, cfg.optim.weight_decay, cfg.optim.momentum)
    model, optimizer = accelerator.prepare(model, optimizer)
    features = accelerator.unwrap_model(model).encoder.num_features
    return Training(
        cfg=cfg,
        accelerator=accelerator,
        model=model,
        forward=torch.compile(model, mode=cfg.compile_mode) if cfg.compile else model,
        optimizer=optimizer,
        scheduler=create_scheduler(
            optimizer,
            cfg.epochs * steps_per_epoch,
            round(cfg.optim.warmup_epochs * steps_per_epoch),
            cfg.optim.min_lr,
            cfg.optim.schedule,
            [e * steps_per_epoch for e in cfg.optim.decay_epochs],
            cfg.optim.decay_rate,
        ),
        scaler=torch.amp.GradScaler(accelerator.device.type) if cfg.precision == "fp16" else None,
        criterion=create_loss("nt_xent", temperature=cfg.temperature),
        # a CUDA graph must not capture autocast's weight-cast cache (trainers/_graphs.py)
        autocast=autocast_context(
            accelerator.device.type, cfg.precision, cache_enabled=False if cfg.cuda_graphs else None
        ),
        probe=None if manifest is None else create_probe(cfg, manifest, features, accelerator),
        state=checkpoint.TrainState(world_size=accelerator.num_processes),
        lr=lr,
    )


def pretrain_accelerator(cfg: PretrainConfig) -> Accelerator:
    return new_accelerator(
        cpu=cfg.cpu,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with=trackers(cfg.track.wandb, cfg.track.tensorboard) or None,
        project_dir=cfg.run_dir,
        # torch's default (30 min gloo, 10 min NCCL) leaves the job of a hung peer idle that long
        kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=cfg.dist_timeout))],
    )


def build_run(cfg: PretrainConfig, accelerator: Accelerator) -> Run:
    """Data, model, optimiser and schedule; the newest checkpoint loaded if there is one; trackers;
    the loader. The run_dir's lock is held (trainers/_pretrain.py). config.yaml, the checkpoints and
    the trackers record `cfg` with its automatic choices made (`PretrainConfig.resolved`)."""
    asked, cfg = cfg, cfg.resolved(accelerator.device.type == "cuda")
    run_dir, world = Path(cfg.run_dir), accelerator.num_processes
    if cfg.batch_size * world < 2:  # the loss would be 0 at every step: nothing is learned
        raise TrainError(
            f"batch_size={cfg.batch_size} on {world} process: no other image in the batch, so no "
            "negative for any anchor (NT-Xent needs one); use batch_size=2 or more"
        )
    set_seed(cfg.seed)
    # each shard folder is opened and checked once (hashing its tars); every loader of the run reads these
    opened: dict[Path, ShardSet] = {}

    def shard_set(folder: str | None) -> ShardSet | None:
        if folder is not None and Path(folder).resolve() not in opened:
            opened[Path(folder).resolve()] = open_shards(folder)
        return None if folder is None else opened[Path(folder).resolve()]

    # a colour preset on gray shards is named by the user's folder, before a subset of it is made
    cfg.data.check_channels(shards.load_manifest(cfg.data.train)["image"]["channels"])
    train = shard_set(_train_shards(cfg, run_dir, accelerator))
    monitored = cfg.knn_every > 0  # knn_every=0: no kNN monitor, its folders never opened
    bank, val = (shard_set(cfg.data.knn_bank), shard_set(cfg.data.knn_val)) if monitored else (None, None)
    channels = cfg.data.channels or train.channels
    steps_per_epoch = train_steps(train.num_samples, cfg.batch_size, world) // cfg.grad_accum
    if steps_per_epoch == 0:
        raise TrainError(
            f"{train.folder}: {train.num_samples} samples make no optimiser step of "
            f"{cfg.batch_size} x {world} processes x {cfg.grad_accum} accumulation; lower batch_size"
        )
    t = build_training(cfg, accelerator, channels, steps_per_epoch, train.manifest)

    # bad data or a bad model file has been refused by now: only the lock is in run_dir
    def resume_newest(damaged=()) -> Resumed:
        return resume(
            run_dir / "checkpoints",
            accelerator,
            resume_settings(cfg),
            t.model,
            t.optimizer,
            t.scheduler,
            t.scaler,
            t.probe,
            damaged,
        )

    resumed = resume_newest()
    if accelerator.is_main_process:  # only once the checkpoint (if any) accepted this config
        try:
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        except OSError as err:
            raise TrainError(f"run_dir {run_dir}: cannot write there ({err.strerror or err})") from None
    tracker_id = resumed.state.tracker_id or new_run_id()
    if accelerator.log_with:  # before the loader: starting W&B writes the environment
        start_trackers(
            accelerator,
            cfg.track.project,
            flatten(dataclasses.asdict(cfg)),
            wandb_init_kwargs(run_dir, cfg.track.name or run_dir.name, cfg.track.tags, tracker_id),
            resume_step=resumed.state.global_step,
        )
    run = Run(
        **{f.name: getattr(t, f.name) for f in dataclasses.fields(Training)} | {"state": resumed.state},
        shards=train,
        knn_bank=bank,
        knn_val=val,
        channels=channels,
        steps_per_epoch=steps_per_epoch,
        global_batch=cfg.batch_size * world * cfg.grad_accum,
    )
    resumed = _open_loader(run, resumed, resume_newest)
    set_aside(accelerator, resumed)
    run.state, run.resumed_from = resumed.state, resumed.path
    run.state.tracker_id = tracker_id
    run.metrics = MetricsLog(
        run_dir / "metrics.jsonl",
        accelerator.is_main_process,
        run.state.global_step,
        redo_epoch=run.state.epoch_record is not None,
    )
    views = cfg.data.views + cfg.data.small_views
    accelerator.print(
        f"{world} process(es) x batch {cfg.batch_size} x accumulation {cfg.grad_accum} = global batch "
        # Accumulated micro-batches never meet in one loss: only processes add negatives.
        f"{run.global_batch}, {views} views each: {views * (cfg.batch_size * world - 1)} negatives per "
        f"anchor; lr {t.lr:.4g} ({cfg.optim.lr} scaled {cfg.optim.lr_scaling}); {steps_per_epoch} steps "
        f"per epoch; precision {cfg.precision}{' (auto)' if asked.precision == 'auto' else ''} on "
        f"{accelerator.device.type}, warm-up {cfg.optim.warmup_epochs:g} epochs"
        f"{' (a tenth of the run)' if asked.optim.warmup_epochs is None else ''}"
    )
    return run


def _open_loader(run: Run, resumed: Resumed, resume_newest: Callable[[list], Resumed]) -> Resumed:
    """Build the run's pretrain loader at `resumed`'s position. When DALI refuses a position (on any
    process: all agree), that checkpoint is damaged too, and the next older one is resumed instead."""
    cfg = run.cfg
    while True:
        failure = None
        try:
            run.loader = run.make_loader(
                "pretrain",
                run.shards,
                preset=cfg.data.preset,
                augment_overrides=cfg.data.augment,
                checkpoint=resumed.position,
                views=cfg.data.views,
                small_views=cfg.data.small_views,
                small_size=cfg.data.small_size,
                small_crop_scale=tuple(cfg.data.small_crop_scale),
            )
        except PositionError as err:
            failure = f"rank-{run.accelerator.process_index}.json: {err}"
        if (failure := first_failure(run.accelerator, failure)) is None:
            return resumed
        run.loader = None
        resumed = resume_newest([*resumed.damaged, (resumed.path, failure)])


def _train_shards(cfg: PretrainConfig, run_dir: Path, accelerator: Accelerator) -> str:
    """`data.train`, or for data.fraction < 1 its stratified subset, made once in the run directory."""
    if cfg.data.fraction >= 1:
        return cfg.data.train
    folder = run_dir / f"train-{cfg.data.fraction:g}"
    if accelerator.is_main_process:
        if (folder / "manifest.json").is_file():  # made by an earlier start of this run: it must match
            made = shards.load_manifest(folder)["subset"]
            wanted = {
                "parent_manifest_sha256": shards.sha256_file(Path(cfg.data.train) / "manifest.json"),
                "fraction": cfg.data.fraction,
                "seed": cfg.seed,
            }
            if any(made.get(k) != v for k, v in wanted.items()):
                raise TrainError(
                    f"{folder}: a subset of other data, fraction or seed than this config's; "
                    "use a new run_dir for another data scale"
                )
        else:
            shards.subset(cfg.data.train, folder, fraction=cfg.data.fraction, seed=cfg.seed, overwrite=True)
    accelerator.wait_for_everyone()
    return str(folder)
