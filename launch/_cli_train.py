"""`fastclr pretrain | run | sweep | report | demo`: each imports torch only when it runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastclr.config import ConfigError, setting
from fastclr.launch._cli_common import say
from fastclr.launch._commands import Command, register
from fastclr.launch._config import check_pretrain_files
from fastclr.trainers import PretrainConfig


def _load_pretrain(config_file: str | None, pairs: list) -> PretrainConfig:
    from fastclr.launch._experiment import load_pretrain

    return load_pretrain(config_file, pairs)


def _pretrain(cfg: PretrainConfig, argv: list[str]) -> dict:
    from fastclr import trainers

    summary = trainers.pretrain(cfg)
    if summary["stopped"] is None and summary["main_process"]:
        print(
            f"done: {summary['epoch']} epochs, {summary['global_step']} steps; encoder {summary['encoder']}"
        )
    return summary


@dataclass
class RunConfig:
    """Overrides: top-level keys (runs=DIR, data=DIR), a step's keys (linear.epochs=10) or pretrain keys
    (optim.lr=0.5)."""

    config: str = setting(help="experiment YAML (launch/configs/...)")
    step: list[str] = setting([], "run only these steps (--step pretrain --step linear)")
    overrides: list[str] = setting([], "key=value settings of the experiment, its steps or its pretrain step")


def _run(cfg: RunConfig, argv: list[str]) -> None:
    from fastclr.launch import _experiment as experiment

    config = experiment.load_experiment(cfg.config, cfg.overrides)
    steps = experiment.build_steps(config, cfg.step or None)
    record = experiment.run_steps(config, steps, say, argv)
    if record is None:
        raise SystemExit(130)  # stopped by a signal with a checkpoint saved; rerunning resumes
    say(f"{record['name']}: done; {experiment.resolve(config)['runs']}/{experiment.RECORD}")
    if record.get("reported"):
        say(f"reported by the original experiment ({record.get('reproduces')}): {record['reported']}")


@dataclass
class SweepConfig:
    """Each point runs in OUT/<point>/; then OUT/results.md, sweep.json and plots. Rerunning skips
    finished points and steps."""

    config: str = setting(help="experiment YAML; its grid: section is the default grid")
    grid: list[str] = setting(
        [], "KEY=[A,B] axes, e.g. --grid 'model.head=[mlp_bn,linear]' (repeat for a product grid)"
    )
    eval: list[str] = setting([], "evaluation steps of the config to run at each point, e.g. linear")
    out: str | None = setting(None, "folder of the sweep; null: <runs>/sweep")
    overrides: list[str] = setting([], "key=value settings applied to every point")


def _sweep(cfg: SweepConfig, argv: list[str]) -> None:
    from fastclr.launch._sweep import sweep

    path = sweep(cfg.config, cfg.grid, cfg.eval, cfg.out, cfg.overrides, say, argv)
    say(f"wrote {path}")


@dataclass
class ReportConfig:
    """A directory counts if it holds results.json (an evaluation) or metrics.jsonl (a pretrain run);
    subdirectories are searched too."""

    dirs: list[str] = setting(help="run and evaluation directories (searched recursively)")
    out: str = setting(help="folder for results.md and the PNGs")
    tsne_encoder: str | None = setting(None, "encoder (run dir or file) for a t-SNE map of features")
    tsne_data: str | None = setting(None, "labelled shards to embed (with tsne_encoder)")

    def check(self) -> None:
        if (self.tsne_encoder is None) != (self.tsne_data is None):
            raise ConfigError("config tsne_encoder and tsne_data go together: set both (or neither)")


def _report(cfg: ReportConfig, argv: list[str]) -> None:
    from fastclr.launch._report import report
    from fastclr.trainers import output_folder

    tsne = [Path(p) if p is not None else None for p in (cfg.tsne_encoder, cfg.tsne_data)]
    try:
        with output_folder(cfg.out, "report"):
            path = report([Path(d) for d in cfg.dirs], Path(cfg.out), *tsne)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    print(f"wrote {path}")


@dataclass
class DemoConfig:
    """SimCLR on scikit-learn's digits on the CPU: a linear probe with 10% of the labels against a
    supervised small CNN trained on the same labels."""

    run_dir: str = setting("runs/demo", "the pretrain run's directory")
    epochs: int = setting(150, "SimCLR epochs")
    supervised_epochs: int = setting(100, "epochs of the supervised baseline")


def _demo(cfg: DemoConfig, argv: list[str]) -> None:
    from fastclr.launch._demo import format_table, run_demo

    result = run_demo(Path(cfg.run_dir), epochs=cfg.epochs, supervised_epochs=cfg.supervised_epochs)
    print(format_table(result))


register(
    Command(
        "pretrain",
        PretrainConfig,
        _pretrain,
        "SimCLR pretraining of an encoder on shards (resumes a run_dir)",
        description="Several GPUs: accelerate launch -m fastclr pretrain ...; several CPU processes: "
        "torchrun --nproc_per_node 2 -m fastclr pretrain ... (on a machine without GPUs they form a "
        "CPU process group by themselves; cpu=true does it beside GPUs). --config may also be an "
        "experiment file with one pretrain step.",
        yaml=True,
        load=_load_pretrain,
        check_files=check_pretrain_files,
    )
)
register(
    Command(
        "run",
        RunConfig,
        _run,
        "run an experiment file's steps in order (pretrain, evaluations), skipping finished ones",
        positional=("overrides",),
        free_keys="overrides",
    )
)
register(
    Command(
        "sweep",
        SweepConfig,
        _sweep,
        "an experiment over a grid of settings: results.md and comparison plots",
        positional=("overrides",),
        free_keys="overrides",
    )
)
register(
    Command(
        "report",
        ReportConfig,
        _report,
        "markdown table over runs and evals, curves and a t-SNE map",
        positional=("dirs",),
    )
)
register(
    Command(
        "demo",
        DemoConfig,
        _demo,
        "pretrain on built-in digits (CPU) and compare with supervised learning",
    )
)
