"""Resume policy: a run directory with a checkpoint continues exactly where it stopped.

A checkpoint records the settings that trained it; a resumed run must repeat them, except the few
in RESUMABLE that change how the run is watched, stopped or sped up but not what it computes. So
config.yaml always describes what trained the encoder beside it. The process count must match too:
the data order and every rank's loader position depend on it.

A damaged checkpoint never blocks a resume: the newest one that verifies, loads and holds finite
weights is resumed, and each newer one is set aside as `.damaged-step-...` with one line naming its
faulty file (`set_aside`, once the loader took the resumed one's position too). When none can be
resumed the run is refused naming them, and nothing is moved: a rerun must not start from scratch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from accelerate.utils import broadcast_object_list

from fastclr import shards
from fastclr.files import write_advice
from fastclr.trainers import _checkpoint as checkpoint
from fastclr.trainers._errors import TrainError
from fastclr.trainers._faults import first_failure, on_main

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


@dataclasses.dataclass
class Resumed:
    """Where a run starts: its state, this rank's loader position and the checkpoint both came from
    (None: a fresh start), with the newer checkpoints found damaged on the way, (path, why) each."""

    state: checkpoint.TrainState
    position: bytes | None = None
    path: Path | None = None
    verified: bool = False  # its files matched their sha256 (False: written before checksums)
    damaged: list[tuple[Path, str]] = dataclasses.field(default_factory=list)


def resume(
    folder: Path, accelerator, settings: dict, model, optimizer, scheduler, scaler, probe, damaged=()
) -> Resumed:
    """The newest checkpoint in `folder` that verifies and loads: its weights, optimiser, schedule,
    scaler, RNG and probe loaded, its state and this rank's loader position returned; a fresh state
    when `folder` holds no checkpoint. `damaged`: (path, why) of checkpoints already found unusable.

    Refused (TrainError) when checkpoints exist but none can be resumed (naming each and its file),
    or when the one to resume was written by another process count or other settings. The main
    process tidies what a crash mid-save left (`checkpoint.recover`) before any rank looks.
    """

    def tidy() -> None:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.recover(folder)
        except OSError as err:
            raise TrainError(f"run_dir {folder.parent}: cannot write there ({err.strerror or err})") from None

    on_main(accelerator, tidy)
    damaged = list(damaged)
    while (path := _newest_verified(folder, accelerator, damaged)) is not None:
        position = None
        try:
            meta, verified = checkpoint.read_meta(path)  # its files verified on the main process
            state = checkpoint.train_state(meta)
            _check_same_run(path, state, meta, settings, accelerator.num_processes)
            position = checkpoint.restore(path, meta, accelerator, model, optimizer, scheduler, scaler, probe)
            failure = None
        except checkpoint.Damaged as err:
            failure = str(err)
        if (failure := first_failure(accelerator, failure)) is None:
            state.settings = settings
            return Resumed(state, position, path, verified, damaged)
        damaged.append((path, failure))
    if damaged:
        raise TrainError(
            f"no checkpoint in {folder} can be resumed: "
            + "; ".join(f"{path.name} is damaged ({why})" for path, why in damaged)
            + "; restore the damaged file from a copy, or start a new run_dir (nothing was moved)"
        )
    return Resumed(checkpoint.TrainState(world_size=accelerator.num_processes, settings=settings))


def _newest_verified(folder: Path, accelerator, damaged: list[tuple[Path, str]]) -> Path | None:
    """The newest checkpoint not in `damaged` whose files verify, checked on the main process; those
    that do not are added to `damaged`. The same answer on every rank."""
    found = checkpoint.newest_verified(folder, damaged) if accelerator.is_main_process else None
    if accelerator.num_processes > 1:
        found, damaged[:] = broadcast_object_list([found, list(damaged)])
    return found


def _check_same_run(path: Path, state, meta: dict, settings: dict, processes: int) -> None:
    """Refuse (TrainError) a checkpoint of another process count or other settings than this run's."""
    if state.world_size != processes:
        raise TrainError(
            f"{path} was written by {state.world_size} processes, this run has "
            f"{processes}; resume with the same number, or start a new run_dir"
        )
    if state.settings is not None:
        before, now = state.settings, settings
    else:  # checkpoints from before `settings` was recorded kept a few keys under "fixed"
        before = flatten(meta["train"].get("fixed") or {})
        now = {k: settings.get(k) for k in before}
    differ = changed_keys(before, now)
    if differ:
        raise TrainError(
            f"{path} was trained with other settings ("
            + "; ".join(f"{k}: checkpoint has {before.get(k)!r}, config has {now.get(k)!r}" for k in differ)
            + f"); restore them or start a new run_dir (a resumed run may change only {RESUMABLE_TEXT})"
        )


def set_aside(accelerator, resumed: Resumed) -> None:
    """Rename each damaged checkpoint newer than the resumed one to `.damaged-...` (main process),
    one line each, then say where the run resumes."""
    for path, why in resumed.damaged if accelerator.is_main_process else ():
        aside = checkpoint.set_aside(path)
        print(f"note: {path} is damaged ({why}); kept aside as {aside.name}; resuming {resumed.path.name}")
    accelerator.wait_for_everyone()
    if resumed.path is not None:
        state = resumed.state
        accelerator.print(
            f"resuming {resumed.path} at epoch {state.epoch}, step {state.global_step} ("
            + ("its files verified" if resumed.verified else "written before checksums, not verified")
            + "; weights and optimiser state finite)"
        )


def save(run) -> Path:
    """Checkpoint the run (every rank's part) into run_dir/checkpoints; a failed write is one line
    naming the previous checkpoint, which is intact. Weights or optimiser state that are not finite
    (the loss was still finite at the last log step) are never saved: one line names the last good."""
    folder = run.run_dir / "checkpoints"
    previous = run.latest_checkpoint()
    model = run.accelerator.unwrap_model(run.model).state_dict()
    bad = checkpoint.non_finite(model) or checkpoint.non_finite(
        checkpoint.optimizer_tensors(run.optimizer.state_dict())
    )
    if bad:
        raise TrainError(
            f"{bad} became non-finite by step {run.state.global_step}; not saved; "
            f"last good checkpoint: {previous or 'none'}; lower optim.lr or use precision=bf16"
        )
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
