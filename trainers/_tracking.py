"""metrics.jsonl always; Weights & Biases and TensorBoard through Accelerate's trackers."""

from __future__ import annotations

import json
import math
import netrc
import os
from pathlib import Path


class MetricsLog:
    """One JSON object per line, appended and flushed; the main process writes it."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None = None, redo_epoch: bool = False):
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None and path.is_file():
            self._truncate(resume_step, redo_epoch)

    def _truncate(self, resume_step: int, redo_epoch: bool) -> None:
        """Lines logged after the checkpoint we start from would appear twice, and a line torn by a
        crash mid-write is unreadable: keep only whole lines up to that step, but for the epoch line
        of that step when the resumed run logs it again (`redo_epoch`). A line that is JSON but no
        record (its step not a number: edited by hand?) cannot be placed: it is kept, and said."""
        kept, odd = [], []
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            record, problem = parse_metrics_line(line)
            if record is None:
                if problem != TORN:
                    kept.append(line)
                    odd.append(f"line {number}: {problem}")
            elif record["step"] < resume_step or (
                record["step"] == resume_step and not (redo_epoch and "epoch_loss" in record)
            ):
                kept.append(line)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)
        if odd:
            print(
                f"note: {self.path}: {_count(odd)} kept as written ({odd[0]}); report and sweep leave it out"
            )

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


TORN = "not JSON"


def parse_metrics_line(line: str) -> tuple[dict | None, str | None]:
    """(the record, None) for a line fastclr writes: a JSON object of numbers with a finite `step`
    (a null is a figure not measured: left out of the record); else (None, what is wrong with it),
    `TORN` for a line that is not JSON at all."""
    try:
        record = json.loads(line)
    except ValueError:
        return None, TORN
    if not isinstance(record, dict):
        return None, f"a JSON {type(record).__name__}, not an object"
    if "step" not in record:
        return None, "no step"
    for key, value in record.items():
        if not (_is_number(value) or (value is None and key != "step")) or (
            key == "step" and not math.isfinite(value)
        ):
            return None, f"{key} {json.dumps(value)[:40]} is not a number"
    return {key: value for key, value in record.items() if value is not None}, None


def read_metrics(path: Path, say=None) -> list[dict]:
    """The records of a metrics.jsonl (a run's, or an evaluation's), in order. A last line torn by a
    crash (or still being written) is dropped; any other line that is no record is left out and
    `say`s one line: the file, how many, the first and why."""
    records, odd = [], []
    text = Path(path).read_text()
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        record, problem = parse_metrics_line(line)
        if record is not None:
            records.append(record)
        elif not (problem == TORN and number == len(lines) and not text.endswith("\n")) and line.strip():
            odd.append(f"line {number}: {problem}")
    if odd:
        (say or _say_once)(
            f"note: {path}: {_count(odd)} left out ({odd[0]}); fastclr writes one object of numbers a line"
        )
    return records


_SAID: set[str] = set()


def _say_once(text: str) -> None:
    """Print once a process (`report` reads a file for its table and again for its curves), from the
    first process of a launch only (every process may read the same file)."""
    if text not in _SAID and os.environ.get("RANK", "0") == "0":
        _SAID.add(text)
        print(text)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(problems: list[str]) -> str:
    return (
        "1 line that is no metrics record"
        if len(problems) == 1
        else f"{len(problems)} lines that are no metrics records"
    )


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


def start_trackers(accelerator, project: str, config: dict, init_kwargs: dict, resume_step: int = 0):
    """Start the Accelerator's trackers (`log_with`) for a run resumed at `resume_step` (0: fresh),
    TensorBoard kept to one run however often the run resumes.

    Accelerate's TensorBoard tracker opens a new SummaryWriter in `<project_dir>/<project>` at every
    start (a new event file there: TensorBoard reads a folder's files as one run) and writes the
    hyperparameters with `add_hparams`, which makes a new sub-folder named by the time: one more run
    in TensorBoard per start. Here they go into the run's own event file, on a fresh start only, and
    each start passes `purge_step`, so TensorBoard drops what an earlier start logged after the
    checkpoint this one resumes from (the steps it logs again). W&B keeps one run through its id.
    """
    kwargs = {**init_kwargs, "tensorboard": {"purge_step": resume_step + 1}}  # read if it is a tracker
    accelerator.init_trackers(project, config=None, init_kwargs=kwargs)
    for tracker in accelerator.trackers:
        if tracker.name != "tensorboard":
            tracker.store_init_configuration(config)
        elif resume_step == 0 and accelerator.is_main_process:
            from torch.utils.tensorboard.summary import hparams

            for summary in hparams(config, {}):  # what add_hparams writes, minus its own folder
                tracker.writer.file_writer.add_summary(summary)
            tracker.writer.flush()


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
        start_trackers(
            accelerator,
            "fastclr",
            {k: str(v) for k, v in config.items()},
            wandb_init_kwargs(out, name, ["eval"], new_run_id()),
        )
    return accelerator
