"""metrics.jsonl always; Weights & Biases and TensorBoard through Accelerate's trackers."""

from __future__ import annotations

import json
import netrc
import os
from pathlib import Path


class MetricsLog:
    """One JSON object per line, appended and flushed; the main process writes it."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None = None, redo_epoch: bool = False):
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None and path.is_file():
            # Lines logged after the checkpoint we start from would appear twice, and a line torn
            # by a crash mid-write is unreadable: keep only whole lines up to that step, but for the
            # epoch line of that step when the resumed run logs it again (`redo_epoch`).
            kept = [
                line
                for line in path.read_text().splitlines()
                if _step(line) < resume_step
                or (_step(line) == resume_step and not (redo_epoch and '"epoch_loss"' in line))
            ]
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl (a run's, or an evaluation's), skipping a line torn by a crash."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _step(line: str) -> float:
    """The step a metrics line was logged at; infinite (dropped) for a torn or empty line."""
    try:
        return json.loads(line).get("step", 0)
    except (ValueError, AttributeError):
        return float("inf")


def wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def trackers(wandb: bool, tensorboard: bool) -> list[str]:
    """Accelerate `log_with` names."""
    return [name for name, on in (("wandb", wandb), ("tensorboard", tensorboard)) if on]


def wandb_init_kwargs(run_dir: Path, name: str, tags: list[str], run_id: str) -> dict:
    """Same id on every restart, `resume="allow"`: a resumed run continues its W&B run. Offline when
    nobody is logged in (no network needed), said to wandb.init rather than through WANDB_MODE: the
    environment must not change once DALI's threads run (`autocast_context`)."""
    options = {"name": name, "tags": list(tags), "id": run_id, "resume": "allow", "dir": str(run_dir)}
    if not wandb_logged_in() and "WANDB_MODE" not in os.environ:
        options["mode"] = "offline"
    return {"wandb": options}


def new_run_id() -> str:
    import secrets

    return secrets.token_hex(4)


def autocast_context(device_type: str, precision: str, cache_enabled: bool | None = None):
    """A zero-argument callable entering torch.autocast for `precision` (bf16, fp16; fp32: nothing).

    fastclr enters autocast itself rather than through `accelerator.autocast()`: Accelerate converts
    its AutocastKwargs inside `clear_environment()` on every call, which unsets and sets again every
    environment variable of the process. DALI's decoder threads read the environment meanwhile
    (libjpeg-turbo calls getenv for every JPEG it decodes), and libc's getenv is not safe against a
    concurrent setenv: CPU runs on JPEG shards died of a segmentation fault. So nothing in fastclr
    writes the environment once a loader exists (tests/test_environment.py). `cache_enabled=False`:
    a CUDA graph must not capture autocast's weight-cast cache.
    """
    import contextlib
    import functools

    import torch

    if precision == "fp32":
        return contextlib.nullcontext
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    options = {} if cache_enabled is None else {"cache_enabled": cache_enabled}
    return functools.partial(torch.autocast, device_type=device_type, dtype=dtype, **options)


def new_accelerator(**kwargs):
    """An Accelerator (device, processes, trackers, gradient accumulation) without mixed precision.

    The trainers enter autocast and scale fp16 losses themselves, so every Accelerator of a process
    has the same state (Accelerate keeps one per process and refuses another precision): `fastclr
    run` and sweeps chain runs of other precisions in one process. Processes torchrun (or accelerate
    launch) started on a machine without GPUs join a CPU process group (gloo) without being asked:
    Accelerate forms one only with `cpu=True` there. A launch of several processes that formed no
    group is refused (RunDirError)."""
    import torch
    from accelerate import Accelerator

    from fastclr.trainers._lock import check_process_group, launched_processes

    cuda = torch.cuda.is_available()
    # LOCAL_RANK: a launcher that also gives each process its rendezvous (torchrun, accelerate launch)
    if not cuda and launched_processes() > 1 and os.environ.get("LOCAL_RANK") is not None:
        kwargs["cpu"] = True
    accelerator = Accelerator(mixed_precision="no", **kwargs)
    check_process_group(accelerator.num_processes, kwargs.get("cpu", False), cuda)
    return accelerator


def eval_accelerator(
    out: Path, name: str, config: dict, wandb: bool = False, tensorboard: bool = False, cpu: bool = False
):
    """An Accelerator whose trackers log an evaluation next to its results.json (project `fastclr`)."""
    log_with = trackers(wandb, tensorboard) or None
    accelerator = new_accelerator(cpu=cpu, log_with=log_with, project_dir=str(out))
    if accelerator.log_with:
        out.mkdir(parents=True, exist_ok=True)
        accelerator.init_trackers(
            "fastclr",
            config={k: str(v) for k, v in config.items()},
            init_kwargs=wandb_init_kwargs(out, name, ["eval"], new_run_id()),
        )
    return accelerator
