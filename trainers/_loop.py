"""The pretrain loop and its step: what one SimCLR step and one epoch do, on one screen each.

`train(run)` runs the epochs of a Run (trainers/_setup.py builds it); `train_step` is one
optimiser step. The loss stays on the device: the loop reads it to the host only every
`track.log_every` steps and at an epoch's end, the steps where all ranks also agree on a stop.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import torch

from fastclr.progress import progress
from fastclr.trainers._errors import TrainError
from fastclr.trainers._faults import StopFlag, agree, check_finite
from fastclr.trainers._graphs import GraphedStep, device_problem, graphs_problem
from fastclr.trainers._monitor import knn_monitor
from fastclr.trainers._resume import save
from fastclr.trainers._setup import Run, Training


def train_step(run: Training, views: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """One optimiser step (a micro-step under gradient accumulation): every view of a size in one
    forward, the criterion over all, backward, the optimiser; the online probe learns from the
    encoder's detached features. Returns the loss, detached, still on the device."""
    accelerator, scaler = run.accelerator, run.scaler
    with accelerator.accumulate(run.model):
        with run.autocast():
            # one forward for all views of a size: one set of BatchNorm statistics, so no view's
            # batch can tell the others apart by them; small (multi-crop) views get their own
            outputs = [run.forward(torch.cat(group)) for group in _by_size(views)]
            features = torch.cat([h for h, _ in outputs])
            projections = torch.cat([z for _, z in outputs])
        loss = run.criterion(*projections.chunk(len(views)))
        accelerator.backward(loss if scaler is None else scaler.scale(loss))
        if scaler is None:
            run.optimizer.step()
        elif accelerator.sync_gradients:  # fp16: skipped when gradients overflowed, then rescaled
            scaler.step(run.optimizer)
            scaler.update()
        run.optimizer.zero_grad(set_to_none=True)
    if run.probe is not None:
        run.probe.step(features.detach(), labels)
    return loss.detach()


def build_step(run: Training) -> Callable[..., torch.Tensor]:
    """`step(*views, labels) -> loss`: `train_step`, then the schedule's rate for the next step.
    With `cuda_graphs` the update is captured once as a CUDA graph and replayed (trainers/_graphs.py)."""
    update = functools.partial(_update, run)
    if run.cfg.cuda_graphs:
        cfg, accelerator = run.cfg, run.accelerator
        problem = graphs_problem(
            cfg.optim.name, cfg.precision, cfg.grad_accum, cfg.compile
        ) or device_problem(accelerator.device, accelerator.num_processes)
        if problem:
            raise TrainError(problem)
        update = GraphedStep(update, getattr(run.optimizer, "optimizer", run.optimizer))  # unwrapped Lars

    def step(*batch: torch.Tensor) -> torch.Tensor:
        loss = update(*batch)
        if run.accelerator.sync_gradients:
            run.state.global_step += 1
            run.scheduler.step_update(run.state.global_step)
        return loss

    return step


def _update(run: Training, *batch: torch.Tensor) -> torch.Tensor:
    *views, labels = batch
    return train_step(run, views, labels)


def train(run: Run) -> str | None:
    """Epochs until the schedule ends (returns None) or a stop (returns "signal" or "max_steps")."""
    state, cfg, accelerator = run.state, run.cfg, run.accelerator
    if state.epoch_record is not None:  # resumed from a checkpoint whose epoch end was cut short
        end_epoch(run)
    with StopFlag() as stop:
        while state.epoch < cfg.epochs:
            run.model.train()
            meter, steps = Meter(run, state.epoch_loss_sum), len(run.loader)
            bar = _bar(run, steps)
            for *views, labels in meter.timed(run.loader.batches(state.step_in_epoch)):
                loss = run.step(*views, labels)  # forward, loss, backward, optimiser, schedule
                state.step_in_epoch += 1
                meter.add(loss, labels.shape[0] * accelerator.num_processes)
                bar.update()
                if not accelerator.sync_gradients:
                    continue  # a micro-step of gradient accumulation
                logged = state.global_step % cfg.track.log_every == 0
                if logged:
                    bar.set_postfix(loss=f"{log_window(run, meter):.3f}")
                if why := stop_reason(run, stop, sync_point=logged or state.step_in_epoch == steps):
                    bar.close()
                    return stop_run(run, meter, why)
            bar.close()
            close_epoch(run, meter)
    return None


class Meter:
    """Sums on the device since the last log line (and over the epoch), with the time spent waiting
    for batches: the loss is read to the host only when a line is logged."""

    def __init__(self, run: Run, epoch_loss_sum: float):
        self.run, self.started = run, time.perf_counter()
        self.epoch_sum = torch.tensor(epoch_loss_sum, device=run.accelerator.device)  # a resumed epoch's
        self.reset()

    def reset(self) -> None:
        self.loss = torch.zeros((), device=self.run.accelerator.device)
        self.steps, self.images, self.wait, self.start = 0, 0, 0.0, time.perf_counter()

    def timed(self, batches):
        """The batches, timing how long each took to arrive."""
        while True:
            waited = time.perf_counter()
            batch = next(batches, None)
            self.wait += time.perf_counter() - waited
            if batch is None:
                return
            yield batch

    def add(self, loss: torch.Tensor, images: int) -> None:
        self.loss += loss
        self.epoch_sum += loss
        self.steps += 1
        self.images += images

    def record(self) -> dict:
        """The log line of this window (reads the loss: a host sync, once per log_every steps)."""
        seconds, state = time.perf_counter() - self.start, self.run.state
        record = {
            "step": state.global_step,
            "epoch": state.epoch,
            "loss": (self.loss / self.steps).item(),
            "lr": self.run.optimizer.param_groups[0]["lr"],
            "images_per_s": self.images / seconds,  # two-view images, all processes: as bench/train.py
            "data_wait": self.wait / seconds,
        }
        if self.run.accelerator.device.type == "cuda":
            record["gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        return record


def _bar(run: Run, steps: int):
    return progress(
        total=steps,
        initial=run.state.step_in_epoch,
        desc=f"epoch {run.state.epoch}",
        enabled=run.accelerator.is_main_process and run.cfg.track.progress,
        leave=False,
        delay=2,  # an epoch of a few seconds shows its end-of-epoch line only, not a 0% bar first
    )


def log_window(run: Run, meter: Meter) -> float:
    """Log the window's mean loss, lr, speed and data wait; warn once if the loss sits at chance."""
    record = meter.record()
    if run.probe is not None:  # a collective on several processes: every rank logs at these steps
        record["online_train_top1"] = run.probe.train_top1(_sum_over_ranks(run))
    check_finite(record["loss"], run)
    run.log(record)
    meter.reset()
    chance = run.criterion.chance(run.global_batch, run.cfg.data.views + run.cfg.data.small_views)
    warmed_up = 2 * round(run.cfg.optim.warmup_epochs * run.steps_per_epoch)
    if run.state.global_step == warmed_up and record["loss"] > 0.98 * chance:
        run.accelerator.print(
            f"warning: loss {record['loss']:.3f} is still at chance level ({chance:.3f}) after "
            "warm-up: are the positives paired right?"
        )
    return record["loss"]


def _sum_over_ranks(run: Run):
    return functools.partial(run.accelerator.reduce, reduction="sum")


def stop_reason(run: Run, stop: StopFlag, sync_point: bool) -> str | None:
    """ "max_steps", "signal" or None. Ranks agree on a signal only at sync points (log steps and an
    epoch's end, the same steps on every rank): an all-reduce read every step would stall every
    step on the host. One process needs no agreement and checks every step."""
    if run.cfg.max_steps is not None and run.state.global_step >= run.cfg.max_steps:
        return "signal" if stop.raised else "max_steps"
    if run.accelerator.num_processes == 1 or sync_point:
        return "signal" if agree(run.accelerator, stop.raised) else None
    return None


def stop_run(run: Run, meter: Meter, why: str) -> str | None:
    """Checkpoint where the run stopped (closing the epoch first if its last step was taken)."""
    if run.state.step_in_epoch == len(run.loader):
        close_epoch(run, meter, stopped=True)
        if run.state.epoch == run.cfg.epochs:
            return None  # nothing is left to resume: finish as a full run does
    else:
        _keep_epoch_sum(run, meter)
        save(run)
    run.accelerator.print(
        f"stopped ({why}) at step {run.state.global_step}; checkpoint {run.saved}; "
        "run the same command again to resume"
    )
    return why


def _keep_epoch_sum(run: Run, meter: Meter) -> float:
    """The epoch's mean loss so far, its sum kept in the state for a checkpoint (one host read), and
    the probe's epoch counts moved where its checkpoint keeps them (a collective: all ranks come here)."""
    state = run.state
    epoch_loss = float(meter.epoch_sum / max(state.step_in_epoch, 1))
    state.epoch_loss_sum = float(meter.epoch_sum)
    if run.probe is not None:
        run.probe.fold_epoch(_sum_over_ranks(run))
    check_finite(epoch_loss, run)
    return epoch_loss


def close_epoch(run: Run, meter: Meter, stopped: bool = False) -> None:
    """The epoch's checkpoint when due (before the kNN monitor builds its loaders: a crash there then
    loses nothing, and the resumed run logs the epoch), then its line."""
    state, cfg = run.state, run.cfg
    epoch_loss = _keep_epoch_sum(run, meter)
    state.epoch_record = {
        "step": state.global_step,
        "epoch": state.epoch,
        "epoch_loss": epoch_loss,
        "epoch_seconds": time.perf_counter() - meter.started,
        # the rate for the next step, as a log line has it: a run too short for log lines has a curve
        "epoch_end_lr": run.optimizer.param_groups[0]["lr"],
    }
    if run.probe is not None:  # over the epoch's steps, every rank's (folded by _keep_epoch_sum)
        state.epoch_record["epoch_online_train_top1"] = run.probe.epoch_train_top1()
    state.epoch += 1
    state.step_in_epoch, state.epoch_loss_sum = 0, 0.0
    if stopped or state.epoch == cfg.epochs or state.epoch % cfg.checkpoint_every == 0:
        save(run)
    end_epoch(run)


def end_epoch(run: Run) -> None:
    """Log the epoch just finished (`state.epoch_record`), with the kNN monitor's figures when due."""
    cfg, record = run.cfg, run.state.epoch_record
    if run.knn_bank is not None and run.state.epoch % cfg.knn_every == 0:
        record.update(knn_monitor(run))
    run.log(record)
    run.state.epoch_record = None
    if cfg.track.progress:
        run.accelerator.print(
            ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
        )


def _by_size(views: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Runs of consecutive views with one shape (the loader puts the small views last)."""
    groups = [[views[0]]]
    for view in views[1:]:
        if view.shape == groups[-1][0].shape:
            groups[-1].append(view)
        else:
            groups.append([view])
    return groups
