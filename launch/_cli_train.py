"""`fastclr pretrain | run | sweep | import-weights | demo`: each imports torch only when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastclr.launch._cli_common import say
from fastclr.launch._cli_eval import add_settings, config_from


def _pretrain(args: argparse.Namespace) -> None:
    from fastclr import trainers
    from fastclr.launch._experiment import load_pretrain

    cfg, text = load_pretrain(args.config, args.overrides)
    summary = trainers.pretrain(cfg, text)
    if summary["stopped"] is None and summary["main_process"]:
        print(
            f"done: {summary['epoch']} epochs, {summary['global_step']} steps; encoder {summary['encoder']}"
        )


def _run(args: argparse.Namespace) -> None:
    from fastclr.launch import _experiment as experiment
    from fastclr.launch.cli import build_parser

    config = experiment.load_experiment(args.config, args.overrides)
    steps = experiment.build_steps(config, build_parser(), args.steps)
    record = experiment.run_steps(config, steps, say)
    if record is None:
        raise SystemExit(130)  # stopped by a signal with a checkpoint saved; rerunning resumes
    say(f"{record['name']}: done; {experiment.resolve(config)['runs']}/{experiment.RECORD}")
    if record.get("reported"):
        say(f"reported by the original experiment ({record.get('reproduces')}): {record['reported']}")


def _sweep(args: argparse.Namespace) -> None:
    from fastclr.launch._sweep import sweep
    from fastclr.launch.cli import build_parser

    path = sweep(args.config, args.grid, args.eval, args.out, args.overrides, build_parser(), say)
    say(f"wrote {path}")


def _import_weights(args: argparse.Namespace) -> None:
    from fastclr import trainers

    cfg = config_from(trainers.ImportWeightsConfig, args)
    path, report = trainers.import_encoder(cfg)
    say(
        f"{path}: {cfg.model} from {cfg.file}; {len(report['loaded'])} tensors loaded, not matched: "
        f"{report['missing'] + report['shape_mismatch'] or 'none'}"
    )


def add_pretrain(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "pretrain",
        help="SimCLR pretraining of an encoder on shards (resumes a run_dir)",
        description="SimCLR pretraining. Several GPUs: accelerate launch -m fastclr pretrain ...; "
        "several CPU processes: torchrun --nproc_per_node 2 -m fastclr pretrain ... cpu=true",
    )
    p.add_argument("--config", help="YAML file (launch/configs/...); keys left out keep their defaults")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.lr=0.5 data.train=DIR")
    p.set_defaults(run=_pretrain)


def add_experiments(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "run",
        help="run an experiment file's steps in order (pretrain, evaluations), skipping finished ones",
        description="Run the steps of an experiment (launch/configs/*.yaml). Overrides: top-level keys "
        "(runs=DIR, data=DIR), a step's keys (linear.epochs=10) or pretrain keys (optim.lr=0.5).",
    )
    p.add_argument("--config", required=True, help="experiment YAML (launch/configs/...)")
    p.add_argument("--step", action="append", dest="steps", help="run only this step (repeatable)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(run=_run)
    p = commands.add_parser(
        "sweep",
        help="an experiment over a grid of settings: results.md and comparison plots",
        description="Run an experiment at every point of a grid, each in OUT/<point>/, then write "
        "OUT/results.md, sweep.json and plots. Rerunning skips finished points and steps.",
    )
    p.add_argument("--config", required=True, help="experiment YAML; its grid: section is the default grid")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=[A,B]",
        help="e.g. 'model.head=[mlp_bn,linear]' (repeat for a product grid)",
    )
    p.add_argument(
        "--eval",
        action="append",
        default=[],
        metavar="STEP",
        help="an evaluation step of the config to run at each point, e.g. linear (repeatable)",
    )
    p.add_argument("--out", help="default: <runs>/sweep")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every point")
    p.set_defaults(run=_sweep)
    p = commands.add_parser(
        "import-weights",
        help="an encoder folder from a local torchvision/timm weights file (ImageNet baselines)",
        description="Write encoder.safetensors + encoder.json from a local weights file, so `fastclr "
        "linear` and `fastclr finetune` evaluate e.g. an ImageNet-supervised ResNet. Nothing is downloaded.",
    )
    from fastclr.trainers import ImportWeightsConfig  # the settings alone: no torch

    add_settings(p, ImportWeightsConfig)
    p.set_defaults(run=_import_weights)


def _demo(args: argparse.Namespace) -> None:
    from fastclr.launch._demo import format_table, run_demo

    result = run_demo(Path(args.run_dir), epochs=args.epochs, supervised_epochs=args.supervised_epochs)
    print(format_table(result))


def add_demo(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "demo",
        help="pretrain on built-in digits (CPU) and compare with supervised learning",
        description="SimCLR on scikit-learn's digits on the CPU: linear probe with 10%% of the "
        "labels against a supervised small CNN trained on the same labels.",
    )
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--epochs", type=int, default=150, help="SimCLR epochs")
    p.add_argument("--supervised-epochs", type=int, default=100)
    p.set_defaults(run=_demo)
