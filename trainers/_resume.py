"""Resume policy: a run directory with a checkpoint continues exactly where it stopped.

A checkpoint records the settings that trained it; a resumed run must repeat them, except the few
in RESUMABLE that change how the run is watched, stopped or sped up but not what it computes. So
config.yaml always describes what trained the encoder beside it. The process count must match too:
the data order and every rank's loader position depend on it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fastclr import shards
from fastclr.files import write_advice
from fastclr.trainers import _checkpoint as checkpoint
from fastclr.trainers._errors import TrainError

# What a resumed run may change: logging, monitoring, checkpoint cadence, when to stop, where the
# files are. Everything else must equal the checkpoint's (lr and epochs too: the schedule is restored
# from it).
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


def flatten(tree: dict, prefix: str = "") -> dict:
    """`{"optim": {"lr": 0.1}}` -> `{"optim.lr": 0.1}`; values other than scalars become strings
    (what trackers accept as config, and hashable for comparing settings)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = (
                value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
            )
    return out


def changed_keys(before: dict, now: dict) -> list[str]:
    """The keys of two flattened settings whose values differ (a key only one side has counts)."""
    return sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))


def resume_settings(cfg) -> dict:
    """The flattened settings a checkpoint records and a resumed run must repeat."""
    settings = {
        k: v
        for k, v in flatten(dataclasses.asdict(cfg)).items()
        if k not in RESUMABLE and not k.startswith("track.")
    }
    settings["data.train manifest sha256"] = shards.sha256_file(Path(cfg.data.train) / "manifest.json")
    return settings


def resume(folder: Path, accelerator, settings: dict, model, optimizer, scheduler, scaler, probe):
    """(TrainState, this rank's loader position) of the newest checkpoint in `folder`, its weights,
    optimiser, schedule, scaler, RNG and probe loaded; a fresh state and None when there is none.

    Refused (TrainError) when the checkpoint's process count or settings differ from this run's.
    The main process tidies what a crash mid-save left (`checkpoint.recover`) before any rank looks.
    """
    if accelerator.is_main_process:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.recover(folder)
        except OSError as err:
            raise TrainError(f"run_dir {folder.parent}: cannot write there ({err.strerror or err})") from None
    accelerator.wait_for_everyone()
    last = checkpoint.latest(folder)
    if last is None:
        return checkpoint.TrainState(world_size=accelerator.num_processes, settings=settings), None
    state, saved = checkpoint.read_state(last)
    if state.world_size != accelerator.num_processes:
        raise TrainError(
            f"{last} was written by {state.world_size} processes, this run has "
            f"{accelerator.num_processes}; resume with the same number, or start a new run_dir"
        )
    if state.settings is not None:
        before, now = state.settings, settings
    else:  # checkpoints from before `settings` was recorded kept a few keys under "fixed"
        before = flatten(saved["train"].get("fixed") or {})
        now = {k: settings.get(k) for k in before}
    differ = changed_keys(before, now)
    if differ:
        raise TrainError(
            f"{last} was trained with other settings ("
            + "; ".join(f"{k}: checkpoint has {before.get(k)!r}, config has {now.get(k)!r}" for k in differ)
            + f"); restore them or start a new run_dir (a resumed run may change only {RESUMABLE_TEXT})"
        )
    state.settings = settings
    loader_state = checkpoint.restore(last, saved, accelerator, model, optimizer, scheduler, scaler, probe)
    accelerator.print(f"resuming {last} at epoch {state.epoch}, step {state.global_step}")
    return state, loader_state


def save(run) -> Path:
    """Checkpoint the run (every rank's part) into run_dir/checkpoints; a failed write is one line
    naming the previous checkpoint, which is intact."""
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
            run.scaler,
            run.probe,
        )
    except checkpoint.CheckpointError as err:
        failed = err.__context__  # the OSError it replaced: free space only for a full disk
        advice = write_advice(failed, run.run_dir) if isinstance(failed, OSError) else "make run_dir writable"
        raise TrainError(
            f"{err}; the previous checkpoint {previous or '(none yet)'} is intact; {advice}, "
            "then run the same command again to resume"
        ) from None
    return run.saved
