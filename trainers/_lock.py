"""Output folders: one writer each, and each one command's output.

Two writers in one folder interleave their files (pretrain's metrics.jsonl, an evaluation's
results and weights) and tidy away each other's unfinished ones, so rank 0 of every command that
writes a folder holds its lock (`fastclr.files.FolderLock`) from before it reads anything to the
end; a second writer is refused at once, naming the first. A folder that already holds another
command's output is refused before anything is written there: files added to a shard folder make
`fastclr shards verify` and every loader refuse it, and two commands' files in one folder can no
longer be told apart (a fine-tune's epochs appended to a pretrain run's metrics.jsonl). The same
command run again in its own folder replaces its output. A launch of several processes that formed
no process group, each of which would write the same folder alone, is refused too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from fastclr.files import LOCK, FolderLock
from fastclr.shards import MANIFEST

__all__ = ["LOCK", "RunDirError", "RunDirLock", "check_out", "output_folder", "writes_out"]

# where launchers write the process count and rank (torchrun and accelerate; MPI and Slurm's PMI)
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
# The protocols an evaluation's results.json names, by the command that writes them: a folder of one
# of them is that command's own. `linear --mode augmented` is a head-only fine-tune.
PROTOCOLS = {
    "knn": r"knn",
    "linear": r"\S+ probe \(cached features\)|finetune \(head, .+\)",
    "finetune": r"finetune \(.+\)",
    "supervised": r"supervised",
    "evaluate": r"evaluate \(.+\)",
    "cluster": r"cluster \(.+\)",
}


class RunDirError(Exception):
    """A run_dir or --out this run may not write: in use by another run, another command's output,
    or one that the launch's processes would each write alone."""


class RunDirLock(FolderLock):
    """The lock of a run_dir (or an evaluation's --out), refused with RunDirError."""

    error = RunDirError

    def __init__(self, run_dir: str | Path, what: str = "run_dir"):
        super().__init__(run_dir, what)


def launched_processes() -> int:
    """How many processes the launcher says it started (1 without a launcher)."""
    return max((int(os.environ.get(name) or 1) for name in WORLD_SIZE_VARIABLES), default=1)


def check_process_group(num_processes: int, cpu: bool, cuda: bool) -> None:
    """Refuse a launch that started several processes which did not join one process group.

    Accelerate joins a launcher's processes into a group on GPUs, or on CPUs when asked (`cpu`, which
    `new_accelerator` sets itself for torchrun on a machine without GPUs); otherwise each runs as a
    one-process job, and they all write the same run_dir.
    """
    launched = launched_processes()
    if launched <= num_processes:
        return
    if not (cpu or cuda):
        fix = "torch sees no GPU here, and Accelerate joins CPU processes only when asked: add cpu=true"
    else:
        fix = "check the launcher's settings (accelerate config, --nproc_per_node, --nnodes)"
    raise RunDirError(
        f"the launcher started {launched} processes but this one runs alone ({num_processes} in its "
        f"process group), so each would train separately in the same run_dir; {fix}"
    )


def check_out(out: str | Path, command: str, what: str = "--out") -> None:
    """`out` can be made a folder and written in, lies in no shard folder, and holds nothing but
    `command`'s own output (RunDirError naming what it holds otherwise)."""
    out = Path(out)
    existing = next(p for p in (out, *out.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise RunDirError(
            f"{what} {out}: cannot write there ({existing} is a file, not a folder); choose another {what}"
        )
    if not os.access(existing, os.W_OK):
        raise RunDirError(
            f"{what} {out}: cannot write there (permission denied in {existing}); choose another {what}"
        )
    shard_set = next((p for p in out.resolve().parents if (p / MANIFEST).is_file()), None)
    if shard_set is not None:
        raise RunDirError(
            f"{what} {out} is inside the shard folder {shard_set}: anything added there makes `fastclr "
            f"shards verify` and every loader refuse it; choose a {what} outside it"
        )
    held = _held(out) if out.is_dir() else None
    if held is None or re.fullmatch(PROTOCOLS.get(command, re.escape(command)), held[0]):
        return
    owner, description = held
    if owner == "shards":
        raise RunDirError(
            f"{what} {out} is {description}: anything added there makes `fastclr shards verify` and "
            f"every loader refuse it; choose another {what}"
        )
    nests = owner in ("pretrain", "import-weights") and command != "pretrain"  # evaluations go inside
    inside = f", such as {out / command.replace('-', '_')}" if nests else ""
    raise RunDirError(
        f"{what} {out} holds {description}, not the output of `fastclr {command}`: the two commands' "
        f"files would mix there; choose another {what}{inside}"
    )


def _held(folder: Path) -> tuple[str, str] | None:
    """Whose output `folder` holds (a command, or an evaluation's protocol) and how to name it."""
    if (folder / MANIFEST).is_file() or any(folder.glob("*.tar")):
        return "shards", "a shard folder (manifest.json, tars)"
    run_files = [name for name in ("metrics.jsonl", "checkpoints/") if (folder / name).exists()]
    if (folder / "config.yaml").is_file() and run_files:  # a run killed before its first checkpoint too
        return "pretrain", f"the run_dir of a pretrain run ({', '.join(['config.yaml', *run_files])})"
    if (folder / "results.json").is_file():
        protocol = _protocol(folder / "results.json")
        return protocol, f"the results of another evaluation ({protocol}, results.json)"
    if (folder / "encoder.json").is_file():
        return "import-weights", "an encoder (encoder.json, encoder.safetensors)"
    if (folder / "results.md").is_file():
        return "report", "a report (results.md)"
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return "export-timm", "an encoder exported for timm (config.json, model.safetensors)"
    return None


def _protocol(results: Path) -> str:
    try:
        protocol = json.loads(results.read_text()).get("protocol")
    except (OSError, ValueError, AttributeError):
        protocol = None
    return protocol if isinstance(protocol, str) else "of no fastclr protocol"


@contextlib.contextmanager
def output_folder(out: str | Path, command: str) -> Iterator[Path]:
    """`command` writing its output folder `out`: vetted by `check_out`, then locked by the launch's
    rank 0 (by the launcher's variables, before any process group exists) until the block ends."""
    out = Path(out)
    check_out(out, command)
    if any(int(os.environ.get(name) or 0) for name in RANK_VARIABLES):
        yield out
        return
    lock = RunDirLock(out, what="--out")
    try:
        lock.acquire()
    except OSError as err:
        raise RunDirError(f"--out {out}: cannot write there ({err.strerror or err})") from None
    try:
        yield out
    finally:
        lock.release()


def writes_out(command: str):
    """Decorate the trainer of `command`, whose settings' `out` names its output folder: it runs
    inside `output_folder(cfg.out, command)`."""

    def decorate(trainer):
        @functools.wraps(trainer)
        def holding(cfg, *args, **kwargs):
            with output_folder(cfg.out, command):
                return trainer(cfg, *args, **kwargs)

        return holding

    return decorate
