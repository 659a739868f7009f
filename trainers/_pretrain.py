"""SimCLR pretraining: one Accelerator, a DALI loader per rank, NT-Xent over every rank's negatives.

Run directory: config.yaml, metrics.jsonl, checkpoints/, encoder.safetensors +
encoder.json, and the trackers' folders. Starting a run whose directory holds a
checkpoint resumes it exactly: epoch, step, optimiser, schedule, RNG and the
loader's position, with the settings it was trained with (only RESUMABLE ones
may change), so config.yaml always describes what trained the encoder. Rank 0
holds the directory's lock (trainers/_lock.py) throughout. SIGTERM or SIGINT
saves a checkpoint at the next step and exits.
A crash at any moment costs at most the steps since the last checkpoint; a full
disk or a dead peer process ends the run with one line naming that checkpoint
(RELIABILITY.md, tests/test_faults.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, broadcast_object_list, set_seed

from fastclr import shards
from fastclr.encoders import SimCLRModel, build_encoder, build_head
from fastclr.pipelines import create_loader, shard_source, train_steps
from fastclr.progress import progress
from fastclr.trainers import _checkpoint as checkpoint
from fastclr.trainers._config import PretrainConfig
from fastclr.trainers._encoder_file import export_encoder
from fastclr.trainers._errors import TrainError
from fastclr.trainers._graphs import GraphedStep, device_problem, graphs_problem
from fastclr.trainers._knn import ANCHOR_K, extract_features, knn_accuracy
from fastclr.trainers._lock import RunDirError, RunDirLock
from fastclr.trainers._loss import chance_loss, nt_xent
from fastclr.trainers._optim import create_optimizer, create_scheduler, scaled_lr
from fastclr.trainers._probe import OnlineProbe, create_probe
from fastclr.trainers._tracking import (
    MetricsLog,
    autocast_context,
    flatten,
    new_accelerator,
    new_run_id,
    trackers,
    wandb_init_kwargs,
)

INPUT_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
ACCELERATE_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it at a step boundary and checkpoints."""

    def __init__(self):
        self.raised = False
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.previous[sig] = signal.signal(sig, self._set)
        return self

    def _set(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _agree(accelerator: Accelerator, flag: bool) -> bool:
    """True on every rank if it is true on any (all ranks must stop at the same step)."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([float(flag)], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def build_model(cfg: PretrainConfig, channels: int) -> SimCLRModel:
    encoder = build_encoder(
        cfg.model.encoder, cfg.model.cifar_stem, cfg.model.pretrained_file, in_chans=channels
    )
    head = build_head(cfg.model.head, encoder.num_features, cfg.model.hidden_dim, cfg.model.out_dim)
    return SimCLRModel(encoder, head)


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


def build_training(
    cfg: PretrainConfig, accelerator: Accelerator, channels: int
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.nn.Module]:
    """The model (SyncBN across GPUs, channels_last) and its optimiser at the batch-scaled lr, prepared.

    Returns (model, optimizer, forward): `forward` is the model compiled in
    `cfg.compile_mode` when `cfg.compile`, else the model itself. The pretrain loop and
    bench/train.py share it.
    """
    world = accelerator.num_processes
    model = build_model(cfg, channels)
    if model.encoder.load_report and accelerator.is_main_process:
        report = model.encoder.load_report
        accelerator.print(
            f"pretrained weights: {len(report['loaded'])} tensors loaded; not matched: "
            f"{report['missing'] + report['shape_mismatch'] or 'none'}"
        )
    if cfg.sync_bn and world > 1:
        # per-rank BN statistics would let each GPU's small batch cheat (PITFALLS 5)
        if accelerator.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            accelerator.print(
                "note: SyncBatchNorm needs GPUs; on CPU processes each keep their own BN statistics"
            )
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    lr = scaled_lr(cfg.optim.lr, cfg.batch_size * world * cfg.grad_accum, cfg.optim.lr_scaling)
    optimizer = create_optimizer(model, cfg.optim.name, lr, cfg.optim.weight_decay, cfg.optim.momentum)
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, optimizer, torch.compile(model, mode=cfg.compile_mode) if cfg.compile else model


def build_step(
    cfg: PretrainConfig,
    accelerator: Accelerator,
    model: torch.nn.Module,
    forward: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    probe: OnlineProbe | None = None,
) -> Callable[..., torch.Tensor]:
    """`step(*views, labels) -> loss`: `train_step` with the probe's step when there is a probe.

    With `cfg.cuda_graphs` the whole of it is captured in a CUDA graph and replayed
    (trainers/_graphs.py): the views and labels are then static inputs, and the probe's
    rate is constant.
    """

    # A graph must not capture autocast's weight-cast cache (trainers/_graphs.py); None: torch's default.
    autocast = autocast_context(accelerator, cache_enabled=False if cfg.cuda_graphs else None)

    def step(*inputs: torch.Tensor) -> torch.Tensor:
        *views, labels = inputs
        probe_step = None if probe is None else functools.partial(probe.step, labels=labels)
        return train_step(
            accelerator, model, forward, optimizer, views, cfg.temperature, probe_step, autocast
        )

    if not cfg.cuda_graphs:
        return step
    problem = graphs_problem(cfg.optim.name, cfg.precision, cfg.grad_accum, cfg.compile) or device_problem(
        accelerator.device, accelerator.num_processes
    )
    if problem:
        raise TrainError(problem)
    return GraphedStep(step, getattr(optimizer, "optimizer", optimizer))  # Accelerate wraps the Lars


def train_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    forward: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    views: Sequence[torch.Tensor],
    temperature: float,
    on_features: Callable[[torch.Tensor], None] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """One SimCLR step: the views of a size in one forward, NT-Xent over all, backward, optimiser step.

    `views` are the loader's (all N views, then any small ones). Returns the detached loss, still
    on the device: reading it would sync the host. `on_features` (the online probe) gets the
    encoder's features of every view, detached. `autocast`: `autocast_context`'s (never
    `accelerator.autocast`, which rewrites the environment).
    """
    with accelerator.accumulate(model):
        with autocast():
            # every view of one size in one pass: one set of BN stats (PITFALLS 5); small views their own
            outputs = [forward(torch.cat(group)) for group in _by_size(views)]
            h = torch.cat([features for features, _ in outputs])
            z = torch.cat([projection for _, projection in outputs])
        loss = nt_xent(*z.chunk(len(views)), temperature=temperature)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if on_features is not None:
        on_features(h.detach())
    return loss.detach()


def _by_size(views: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Runs of consecutive views with one shape (the loader puts the small views last)."""
    groups = [[views[0]]]
    for view in views[1:]:
        if view.shape == groups[-1][0].shape:
            groups[-1].append(view)
        else:
            groups.append([view])
    return groups


@dataclasses.dataclass
class Run:
    """What `_setup` builds and the loop uses: one resumed or fresh run."""

    cfg: PretrainConfig
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: Callable[..., torch.Tensor]  # build_step's: (*views, labels) -> loss
    scheduler: object  # timm scheduler, stepped per optimiser step
    loader: object  # pipelines.DaliLoader of the pretrain graph
    make_loader: Callable[..., object]  # (mode, folder) -> a loader with the run's settings
    state: checkpoint.TrainState
    metrics: MetricsLog
    manifest: dict
    channels: int
    steps_per_epoch: int
    global_batch: int
    probe: OnlineProbe | None = None  # the online linear probe (trainers/_probe.py)
    saved: Path | None = None  # the checkpoint this run wrote last

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run_dir)


class Window:
    """Sums over the steps since the last log line: the loss stays on the device until it is logged."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.steps, self.images, self.wait, self.start = 0, 0, 0.0, time.perf_counter()

    def add(self, loss: torch.Tensor, images: int) -> None:
        self.loss += loss
        self.steps += 1
        self.images += images

    def record(self, state: checkpoint.TrainState, optimizer: torch.optim.Optimizer) -> dict:
        """The log line of this window (reads the loss: a host sync, once per log_every steps)."""
        seconds = time.perf_counter() - self.start
        record = {
            "step": state.global_step,
            "epoch": state.epoch,
            "loss": (self.loss / self.steps).item(),
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": self.images / seconds,  # two-view images, all processes: as bench/train.py
            "data_wait": self.wait / seconds,
        }
        if self.device.type == "cuda":
            record["gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        return record


def pretrain(cfg: PretrainConfig, config_yaml: str | None = None) -> dict:
    """Train (or resume) the run in `cfg.run_dir`; returns a summary of where it ended.

    config.yaml holds `config_yaml`, by default `cfg` itself as YAML.

    Rank 0 holds the run_dir's lock from setup to the end, however the run ends: a second run
    there is refused, naming this one.
    """
    if config_yaml is None:
        from omegaconf import OmegaConf

        config_yaml = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    lock = RunDirLock(Path(cfg.run_dir))
    try:
        return _locked_pretrain(cfg, config_yaml, lock)
    finally:
        lock.release()


def _locked_pretrain(cfg: PretrainConfig, config_yaml: str, lock: RunDirLock) -> dict:
    run = _setup(cfg, config_yaml, lock)
    accelerator, run_dir = run.accelerator, run.run_dir
    try:
        stopped = _train(run)
        if stopped is None and accelerator.is_main_process:
            export_encoder(
                run_dir, accelerator.unwrap_model(run.model).encoder, cfg, run.manifest, run.channels
            )
    except OSError as err:  # metrics or the encoder (checkpoint writes raise TrainError themselves)
        raise TrainError(
            f"{err.filename or run_dir}: cannot write ({err.strerror or err}); last checkpoint: "
            f"{checkpoint.latest(run_dir / 'checkpoints') or 'none'}; free space, then run the same command"
        ) from None
    except RuntimeError as err:
        if accelerator.num_processes == 1 or not _peer_lost(err):
            raise
        raise TrainError(
            f"process {accelerator.process_index} of {accelerator.num_processes}: another process stopped "
            f"or hung (dist_timeout {cfg.dist_timeout} s), so a collective failed "
            f"({_first_line(err)}); last checkpoint: {checkpoint.latest(run_dir / 'checkpoints') or 'none'}; "
            "run the same command again to resume from it"
        ) from None
    summary = {
        "run_dir": str(run_dir),
        "global_step": run.state.global_step,
        "epoch": run.state.epoch,
        "stopped": stopped,
        "encoder": None if stopped else str(run_dir / "encoder.safetensors"),
        "main_process": accelerator.is_main_process,
    }
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _setup(cfg: PretrainConfig, config_yaml: str, lock: RunDirLock) -> Run:
    """Accelerator, data, model, optimiser and schedule; the newest checkpoint loaded if there is one."""
    run_dir = Path(cfg.run_dir)
    accelerator = new_accelerator(
        cpu=cfg.cpu,
        mixed_precision=ACCELERATE_PRECISION[cfg.precision],
        gradient_accumulation_steps=cfg.grad_accum,
        log_with=trackers(cfg.track.wandb, cfg.track.tensorboard) or None,
        project_dir=str(run_dir),
        # torch's default (30 min gloo, 10 min NCCL) leaves a hung peer's job idle that long (PITFALLS 32)
        kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=cfg.dist_timeout))],
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    _on_main(accelerator, lambda: _take(lock))  # before anything reads or tidies the run_dir
    set_seed(cfg.seed)
    gpu = accelerator.device.type == "cuda"
    dtype = INPUT_DTYPE[cfg.precision] if gpu else torch.float32

    def make_loader(mode: str, folder: str, **extra):
        return create_loader(
            mode,
            folder,
            batch_size=cfg.batch_size,
            size=cfg.data.size,
            rank=rank,
            world_size=world,
            device=accelerator.device,
            dtype=dtype,
            channels_last=cfg.channels_last,
            channels=cfg.data.channels,
            num_threads=cfg.data.num_threads,
            prefetch=cfg.data.prefetch,
            augment_device=cfg.data.augment_device,
            seed=cfg.seed,
            **extra,
        )

    train = _train_shards(cfg, run_dir, accelerator)
    _, manifest = shard_source(train)  # the model and schedule need these before the loader exists
    channels = cfg.data.channels or manifest["image"]["channels"]
    steps_per_epoch = train_steps(manifest["num_samples"], cfg.batch_size, world) // cfg.grad_accum
    if steps_per_epoch == 0:
        raise TrainError(
            f"{train}: {manifest['num_samples']} samples make no optimiser step of "
            f"{cfg.batch_size} x {world} processes x {cfg.grad_accum} accumulation; lower batch_size"
        )

    model, optimizer, forward = build_training(cfg, accelerator, channels)
    probe = create_probe(cfg, manifest, accelerator.unwrap_model(model).encoder.num_features, accelerator)
    step = build_step(cfg, accelerator, model, forward, optimizer, probe)
    global_batch = cfg.batch_size * world * cfg.grad_accum
    lr = scaled_lr(cfg.optim.lr, global_batch, cfg.optim.lr_scaling)  # as build_training set it
    scheduler = create_scheduler(
        optimizer,
        cfg.epochs * steps_per_epoch,
        round(cfg.optim.warmup_epochs * steps_per_epoch),
        cfg.optim.min_lr,
        cfg.optim.schedule,
        [e * steps_per_epoch for e in cfg.optim.decay_epochs],
        cfg.optim.decay_rate,
    )

    settings = resume_settings(cfg)
    state, loader_state = checkpoint.TrainState(world_size=world, settings=settings), None
    if main:  # bad data or a bad model file has been refused by now: only the lock is in run_dir
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.recover(run_dir / "checkpoints")
        except OSError as err:
            raise TrainError(f"run_dir {run_dir}: cannot write there ({err.strerror or err})") from None
    accelerator.wait_for_everyone()  # every rank looks for the newest checkpoint after recover()
    last = checkpoint.latest(run_dir / "checkpoints")
    if last is not None:
        try:
            state, loader_state = checkpoint.load(
                last, accelerator, model, optimizer, scheduler, settings, RESUMABLE_TEXT, probe
            )
        except checkpoint.ResumeError as err:
            raise TrainError(str(err)) from None
        accelerator.print(f"resuming {last} at epoch {state.epoch}, step {state.global_step}")
    if main:  # only once the checkpoint (if any) accepted this config
        try:
            (run_dir / "config.yaml").write_text(config_yaml)
        except OSError as err:
            raise TrainError(f"run_dir {run_dir}: cannot write there ({err.strerror or err})") from None
    state.tracker_id = state.tracker_id or new_run_id()
    if accelerator.log_with:  # before the loader: starting W&B writes the environment
        accelerator.init_trackers(
            cfg.track.project,
            config=flatten(dataclasses.asdict(cfg)),
            init_kwargs=wandb_init_kwargs(
                run_dir, cfg.track.name or run_dir.name, cfg.track.tags, state.tracker_id
            ),
        )
    loader = make_loader(
        "pretrain",
        train,
        preset=cfg.data.preset,
        augment_overrides=cfg.data.augment,
        checkpoint=loader_state,
        views=cfg.data.views,
        small_views=cfg.data.small_views,
        small_size=cfg.data.small_size,
        small_crop_scale=tuple(cfg.data.small_crop_scale),
    )
    views = cfg.data.views + cfg.data.small_views
    accelerator.print(
        f"{world} process(es) x batch {cfg.batch_size} x accumulation {cfg.grad_accum} = global batch "
        # Accumulated micro-batches never meet in one NT-Xent: only processes add negatives.
        f"{global_batch}, {views} views each: {views * (cfg.batch_size * world - 1)} negatives per anchor; "
        f"lr {lr:.4g} "
        f"({cfg.optim.lr} scaled {cfg.optim.lr_scaling}); {steps_per_epoch} steps per epoch"
    )
    return Run(
        cfg=cfg,
        accelerator=accelerator,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        make_loader=make_loader,
        state=state,
        metrics=MetricsLog(
            run_dir / "metrics.jsonl", main, state.global_step, redo_epoch=state.epoch_record is not None
        ),
        manifest=manifest,
        channels=channels,
        steps_per_epoch=steps_per_epoch,
        global_batch=global_batch,
        probe=probe,
        step=step,
    )


# What a resumed run may change: logging, monitoring, checkpoint cadence, when to stop, where the
# files are. Everything else must equal the checkpoint's (lr and epochs too: the schedule is restored
# from it), so config.yaml always describes what trained the encoder beside it.
RESUMABLE = (
    "run_dir",
    "max_steps",
    "checkpoint_every",
    "keep_checkpoints",
    "dist_timeout",
    "knn_k",
    "knn_temperature",
    "knn_every",
    "data.knn_bank",
    "data.knn_val",
    "data.train",  # the shards may move: their manifest's sha256 is compared instead
    "model.pretrained_file",  # read only when training starts
    # how fast, not what: compilation, CUDA graphs and DALI's threads and queue leave the numbers as
    # they are (data.augment_device does not: CPU and GPU operators draw other random streams)
    "compile",
    "compile_mode",
    "cuda_graphs",
    "data.num_threads",
    "data.prefetch",
)
RESUMABLE_TEXT = ", ".join(RESUMABLE) + ", track.*"


def resume_settings(cfg: PretrainConfig) -> dict:
    """The flattened settings a checkpoint records and a resumed run must repeat."""
    settings = {
        k: v
        for k, v in flatten(dataclasses.asdict(cfg)).items()
        if k not in RESUMABLE and not k.startswith("track.")
    }
    settings["data.train manifest sha256"] = shards.sha256_file(Path(cfg.data.train) / "manifest.json")
    return settings


def _take(lock: RunDirLock) -> None:
    try:
        stale = lock.acquire()
    except OSError as err:
        raise TrainError(f"run_dir {lock.run_dir}: cannot write there ({err.strerror or err})") from None
    if stale:
        print(
            f"note: taking over {lock.path}, left by pid {stale.get('pid')} on host {stale.get('host')}, "
            "which has ended"
        )


def _on_main(accelerator: Accelerator, action: Callable[[], None]) -> None:
    """Run `action` on the main process; if it refuses, every rank raises its one line (none waits
    in a collective for a rank that left)."""
    refusal = None
    if accelerator.is_main_process:
        try:
            action()
        except (TrainError, RunDirError) as err:
            refusal = err
    if accelerator.num_processes > 1:
        refusal = broadcast_object_list([refusal])[0]
    if refusal is not None:
        raise refusal


def _train(run: Run) -> str | None:
    """Epochs until the schedule ends (returns None) or a stop (returns "signal" or "max_steps")."""
    if run.state.epoch_record is not None:  # resumed from a checkpoint whose epoch end was cut short
        _end_epoch(run)
    with StopFlag() as stop:
        while run.state.epoch < run.cfg.epochs:
            stopped = _epoch(run, stop)
            if stopped is not None:
                saved = run.saved is not None and run.saved.name == checkpoint.name_of(run.state.global_step)
                path = run.saved if saved else _save(run)
                run.accelerator.print(
                    f"stopped ({stopped}) at step {run.state.global_step}; checkpoint {path}; "
                    "run the same command again to resume"
                )
                return stopped
    return None


def _epoch(run: Run, stop: StopFlag) -> str | None:
    """The rest of the epoch in progress: the hot loop. Returns why it stopped early, if it did."""
    cfg, accelerator, state, loader = run.cfg, run.accelerator, run.state, run.loader
    run.model.train()
    window, started = Window(accelerator.device), time.perf_counter()
    loss_sum, taken = state.epoch_loss_sum, state.step_in_epoch  # a resumed epoch's sum so far
    bar = progress(
        total=len(loader),
        initial=state.step_in_epoch,
        desc=f"epoch {state.epoch}",
        enabled=accelerator.is_main_process and cfg.track.progress,
        leave=False,
        delay=2,  # an epoch of a few seconds shows its end-of-epoch line only, not a 0% bar first
    )
    batches, stopped = loader.batches(state.step_in_epoch), None
    while stopped is None:
        waited = time.perf_counter()
        batch = next(batches, None)
        window.wait += time.perf_counter() - waited
        if batch is None:
            break
        loss = run.step(*batch)  # the views and their labels (the probe's); see build_step
        state.step_in_epoch += 1
        loss_sum, taken = loss_sum + loss, taken + 1
        window.add(loss, batch[0].shape[0] * accelerator.num_processes)
        bar.update()
        if not accelerator.sync_gradients:
            continue
        state.global_step += 1
        run.scheduler.step_update(state.global_step)
        logged = state.global_step % cfg.track.log_every == 0
        if logged:
            bar.set_postfix(loss=f"{_log_window(run, window):.3f}")
        stopped = _stop_reason(run, stop, logged or state.step_in_epoch == len(loader))
    bar.close()
    epoch_loss = float(loss_sum / max(taken, 1))
    state.epoch_loss_sum = float(loss_sum)  # a checkpoint mid-epoch keeps it (one read an epoch or stop)
    _check_finite(epoch_loss, state, run.run_dir)
    if state.step_in_epoch == len(loader):  # a stop on an epoch's last step still closes the epoch
        state.epoch_record = {
            "step": state.global_step,
            "epoch": state.epoch,
            "epoch_loss": epoch_loss,
            "epoch_seconds": time.perf_counter() - started,
        }
        state.epoch += 1
        state.step_in_epoch, state.epoch_loss_sum = 0, 0.0
        if stopped is not None or state.epoch == cfg.epochs or state.epoch % cfg.checkpoint_every == 0:
            _save(run)  # the epoch's work is safe before the kNN monitor builds its loaders
        _end_epoch(run)
        if state.epoch == cfg.epochs:
            return None  # nothing is left to resume: finish as a full run does
    return stopped


def _stop_reason(run: Run, stop: StopFlag, sync_point: bool) -> str | None:
    """ "max_steps", "signal" or None. Ranks agree on a signal only at sync points (log steps and an
    epoch's end, the same steps on every rank): an all-reduce read every step would stall each step
    on the host (PITFALLS 39). One process needs no agreement and checks every step."""
    if run.cfg.max_steps is not None and run.state.global_step >= run.cfg.max_steps:
        return "signal" if stop.raised else "max_steps"
    if run.accelerator.num_processes == 1 or sync_point:
        return "signal" if _agree(run.accelerator, stop.raised) else None
    return None


def _log_window(run: Run, window: Window) -> float:
    """Log the window's mean loss, lr, speed and data wait; warn once if the loss sits at chance."""
    record = window.record(run.state, run.optimizer)
    if run.probe is not None:  # a collective on several processes: every rank logs at these steps
        record["online_train_top1"] = run.probe.train_top1(
            functools.partial(run.accelerator.reduce, reduction="sum")
        )
    _check_finite(record["loss"], run.state, run.run_dir)
    _log(run, record)
    window.reset()
    chance = chance_loss(run.global_batch, run.cfg.data.views + run.cfg.data.small_views)
    warmed_up = 2 * round(run.cfg.optim.warmup_epochs * run.steps_per_epoch)
    if run.state.global_step == warmed_up and record["loss"] > 0.98 * chance:
        run.accelerator.print(
            f"warning: loss {record['loss']:.3f} is still at chance level (ln(VN-1) = {chance:.3f}) "
            "after warm-up: are the positives paired right?"
        )
    return record["loss"]


def _end_epoch(run: Run) -> None:
    """Log the epoch just finished (`state.epoch_record`), with its kNN accuracy when due."""
    cfg, record = run.cfg, run.state.epoch_record
    if cfg.data.knn_bank and cfg.data.knn_val and run.state.epoch % cfg.knn_every == 0:
        record.update(_knn(run))
    _log(run, record)
    run.state.epoch_record = None
    if cfg.track.progress:
        run.accelerator.print(
            ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
        )


def _log(run: Run, record: dict) -> None:
    run.metrics.write(record)
    run.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])


def _save(run: Run) -> Path:
    folder = run.run_dir / "checkpoints"
    previous = checkpoint.latest(folder)
    try:
        run.saved = checkpoint.save(
            folder,
            run.accelerator,
            run.model,
            run.optimizer,
            run.scheduler,
            run.state,
            run.loader.state(),
            run.cfg.keep_checkpoints,
            run.probe,
        )
        return run.saved
    except checkpoint.CheckpointError as err:
        raise TrainError(
            f"{err}; the previous checkpoint {previous or '(none yet)'} is intact; free space "
            "or make run_dir writable, then run the same command again to resume"
        ) from None


def _peer_lost(err: RuntimeError) -> bool:
    """A collective failed because a peer process died or stopped answering (gloo, NCCL, the store)."""
    text = str(err)
    return isinstance(err, torch.distributed.DistError) or any(
        mark in text for mark in ("gloo", "NCCL", "Connection reset", "Connection closed", "Broken pipe")
    )


def _first_line(err: Exception) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)[:200]


def _check_finite(value: float, state, run_dir: Path) -> None:
    if value != value or value in (float("inf"), float("-inf")):
        last = checkpoint.latest(run_dir / "checkpoints")
        raise TrainError(
            f"loss became {value} by step {state.global_step} (epoch {state.epoch}); stopped without "
            f"saving; last good checkpoint: {last or 'none'}; lower optim.lr or use precision=bf16"
        )


def _knn(run: Run) -> dict[str, float]:
    """kNN accuracy of the current encoder both ways (weighted, knn_k; majority, k=10) and the online
    probe's on the same val features; the eval pipelines are built on demand and dropped."""
    cfg, accelerator = run.cfg, run.accelerator
    encoder = accelerator.unwrap_model(run.model).encoder
    autocast = autocast_context(accelerator)
    bank_loader = run.make_loader("val", cfg.data.knn_bank)
    bank, bank_labels = extract_features(encoder, bank_loader, autocast)
    queries, labels = extract_features(encoder, run.make_loader("val", cfg.data.knn_val), autocast)
    classes = bank_loader.manifest["num_classes"]
    record = {
        "knn_accuracy": knn_accuracy(
            bank, bank_labels, queries, labels, classes, cfg.knn_k, cfg.knn_temperature
        ),
        "knn_k10_majority_accuracy": knn_accuracy(
            bank, bank_labels, queries, labels, classes, ANCHOR_K, vote="majority"
        ),
    }
    if run.probe is not None:
        record["online_val_top1"] = run.probe.val_top1(queries, labels)
    return record
