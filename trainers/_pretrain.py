"""`pretrain(cfg)`: SimCLR pretraining of the run in `cfg.run_dir`, fresh or resumed.

Run directory: config.yaml, metrics.jsonl, checkpoints/, encoder.safetensors + encoder.json, and
the trackers' folders. Rank 0 holds the directory's lock throughout (trainers/_lock.py). A crash
at any moment costs at most the steps since the last checkpoint; SIGTERM or SIGINT saves one at
the next step; a full disk or a dead peer ends the run with one line naming that checkpoint
(RELIABILITY.md, tests/test_faults.py).
"""

from __future__ import annotations

from pathlib import Path

from fastclr.files import write_advice
from fastclr.trainers._config import PretrainConfig
from fastclr.trainers._encoder_file import export_encoder
from fastclr.trainers._errors import TrainError
from fastclr.trainers._faults import first_line, on_main, peer_lost
from fastclr.trainers._lock import RunDirLock, check_out
from fastclr.trainers._loop import build_step, train
from fastclr.trainers._setup import build_run, pretrain_accelerator


def pretrain(cfg: PretrainConfig) -> dict:
    """Train (or resume) the run in `cfg.run_dir`; returns a summary of where it ended.

    Rank 0 holds the run_dir's lock from setup to the end, however the run ends: a second run
    there is refused, naming this one.
    """
    lock = RunDirLock(Path(cfg.run_dir))
    try:
        accelerator = pretrain_accelerator(cfg)
        on_main(accelerator, lambda: _take(lock))  # before anything reads or tidies the run_dir
        run = build_run(cfg, accelerator)
        run.step = build_step(run)
        try:
            stopped = train(run)
            if stopped is None and accelerator.is_main_process:
                encoder = accelerator.unwrap_model(run.model).encoder
                export_encoder(run.run_dir, encoder, cfg, run.shards.manifest, run.channels)
        except OSError as err:  # metrics or the encoder (checkpoint writes raise TrainError themselves)
            raise TrainError(
                f"{err.filename or run.run_dir}: cannot write ({err.strerror or err}); last checkpoint: "
                f"{run.latest_checkpoint() or 'none'}; {write_advice(err, run.run_dir)}, "
                "then run the same command"
            ) from None
        except RuntimeError as err:
            if accelerator.num_processes == 1 or not peer_lost(err):
                raise
            raise TrainError(
                f"process {accelerator.process_index} of {accelerator.num_processes}: another process "
                f"stopped or hung (dist_timeout {cfg.dist_timeout} s), so a collective failed "
                f"({first_line(err)}); last checkpoint: {run.latest_checkpoint() or 'none'}; "
                "run the same command again to resume from it"
            ) from None
        run.loader = None  # DALI's threads end here, before the trackers close
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return {
            "run_dir": str(run.run_dir),
            "global_step": run.state.global_step,
            "epoch": run.state.epoch,
            "stopped": stopped,
            "encoder": None if stopped else str(run.run_dir / "encoder.safetensors"),
            "main_process": accelerator.is_main_process,
        }
    finally:
        lock.release()


def _take(lock: RunDirLock) -> None:
    check_out(lock.folder, "pretrain", what="run_dir")  # not a shard folder or another command's output
    try:
        stale = lock.acquire()
    except OSError as err:
        raise TrainError(f"run_dir {lock.folder}: cannot write there ({err.strerror or err})") from None
    if stale:
        print(
            f"note: taking over {lock.path}, left by pid {stale.get('pid')} on host {stale.get('host')}, "
            "which has ended"
        )
