"""The `fastclr` command (also `python -m launch`): one subcommand per job."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import encoders
import pipelines
import shards
import trainers
from launch import _experiment as experiment
from launch._config import ConfigError

ERRORS = (
    shards.ShardError,
    pipelines.PipelineError,
    encoders.EncoderError,
    trainers.TrainError,
    trainers.EvalError,
    ConfigError,
)


def _convert(args: argparse.Namespace) -> None:
    options = {}
    if args.source == "synthetic":
        options = {"num": args.num, "size": args.size, "classes": args.classes, "seed": args.seed}
    shards.check_output(args.out, args.overwrite)  # before reading a large dataset
    source = shards.open_source(args.source, args.src, args.split, **options)
    manifest = shards.convert(
        source,
        args.out,
        encoding=args.encoding,
        quality=args.quality,
        shard_size=args.shard_size,
        workers=args.workers,
        overwrite=args.overwrite,
        skip_corrupt=args.skip_corrupt,
        reencode=args.reencode,
        max_side=args.max_side,
        seed=args.seed,
        shuffle=not args.no_shuffle,
        progress=not args.quiet,
        command=args.argv,
    )
    skipped = manifest["skipped"]["count"]
    print(
        f"wrote {manifest['num_samples']:,} samples in {len(manifest['shards'])} shards to "
        f"{args.out} in {manifest['provenance']['seconds']:.1f} s"
        + (f" ({skipped} unreadable images skipped, listed in the manifest)" if skipped else "")
    )


def _subset(args: argparse.Namespace) -> None:
    shards.check_output(args.out, args.overwrite)
    manifest = shards.subset(
        args.dir,
        args.out,
        fraction=args.fraction,
        per_class=args.per_class,
        seed=args.seed,
        overwrite=args.overwrite,
        command=args.argv,
    )
    print(
        f"wrote {manifest['num_samples']:,} of {manifest['subset']['parent_num_samples']:,} "
        f"samples to {args.out}"
    )


def _verify(args: argparse.Namespace) -> None:
    report = shards.verify(args.dir, decode=not args.no_decode)
    print(f"{args.dir}: OK, {report['samples']:,} samples in {report['shards']} shards")


def _info(args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(shards.load_manifest(args.dir), indent=1))
    else:
        print(shards.describe(args.dir))


def _add_shards(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "shards",
        help="convert datasets to WebDataset shards; subset, verify and describe them",
        description="Datasets to WebDataset shards (tar + DALI index + manifest).",
    )
    sub = parser.add_subparsers(dest="shards_command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "convert",
        help="convert a dataset (cifar10, mnist, imagefolder, ...) to shards",
        description="Convert a dataset as distributed into shuffled tar shards, a DALI "
        "index per shard and manifest.json.",
    )
    p.add_argument("source", choices=sorted(shards.SOURCES), help="the dataset's format")
    p.add_argument("--src", help="where the dataset's files are (not needed for digits, synthetic)")
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--split", default="train", choices=shards.SPLITS)
    p.add_argument(
        "--encoding",
        default="auto",
        choices=shards.ENCODINGS,
        help="auto keeps JPEG/PNG files byte for byte and stores arrays as PNG",
    )
    p.add_argument("--quality", type=int, default=95, help="JPEG quality when encoding to JPEG")
    p.add_argument("--reencode", action="store_true", help="re-encode even files already in --encoding")
    p.add_argument("--max-side", type=int, help="shrink images whose longer side exceeds this many pixels")
    p.add_argument("--shard-size", type=int, default=5000, help="samples per tar")
    p.add_argument("--workers", type=int, default=1, help="processes writing shards")
    p.add_argument("--seed", type=int, default=0, help="seed of the global shuffle (and of synthetic)")
    p.add_argument("--no-shuffle", action="store_true", help="keep the source order")
    p.add_argument("--overwrite", action="store_true", help="replace an existing shard folder")
    p.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="skip unreadable images (counted and listed in the manifest) instead of failing",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    group = p.add_argument_group("synthetic")
    group.add_argument("--num", type=int, default=1000, help="number of images")
    group.add_argument("--size", type=int, default=32, help="image side in pixels")
    group.add_argument("--classes", type=int, default=10, help="number of classes")
    p.set_defaults(run=_convert)

    p = sub.add_parser(
        "subset",
        help="stratified, seeded subset (label fractions, data scale)",
        description="Copy a stratified, seeded subset of a shard folder.",
    )
    p.add_argument("dir", help="shard folder to draw from")
    p.add_argument("--out", required=True, help="folder to create")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--fraction", type=float, help="keep this fraction of every class")
    how.add_argument("--per-class", type=int, help="keep exactly K samples of every class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing shard folder")
    p.set_defaults(run=_subset)

    p = sub.add_parser(
        "verify",
        help="check hashes, indexes, decoding and labels of every sample",
        description="Check a shard folder against its manifest; exits non-zero at the "
        "first fault, naming the shard and sample.",
    )
    p.add_argument("dir")
    p.add_argument("--no-decode", action="store_true", help="skip decoding images (hashes only)")
    p.set_defaults(run=_verify)

    p = sub.add_parser(
        "info", help="a short summary of a shard folder", description="Summarise a shard folder's manifest."
    )
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="print the whole manifest")
    p.set_defaults(run=_info)


def _pretrain(args: argparse.Namespace) -> None:
    cfg, text = experiment.load_pretrain(args.config, args.overrides)
    summary = trainers.pretrain(cfg, text)
    if summary["stopped"] is None and summary["main_process"]:
        print(
            f"done: {summary['epoch']} epochs, {summary['global_step']} steps; encoder {summary['encoder']}"
        )


def _run(args: argparse.Namespace) -> None:
    config = experiment.load_experiment(args.config, args.overrides)
    steps = experiment.build_steps(config, build_parser(), args.steps)
    record = experiment.run_steps(config, steps, say)
    if record is None:
        raise SystemExit(130)  # stopped by a signal with a checkpoint saved; rerunning resumes
    say(f"{record['name']}: done; {experiment.resolve(config)['runs']}/{experiment.RECORD}")
    if record.get("reported"):
        say(f"reported by the original experiment ({record.get('reproduces')}): {record['reported']}")


def _sweep(args: argparse.Namespace) -> None:
    from launch._sweep import sweep

    path = sweep(args.config, args.grid, args.eval, args.out, args.overrides, build_parser(), say)
    say(f"wrote {path}")


def _import_weights(args: argparse.Namespace) -> None:
    path, report = trainers.import_encoder(
        args.model, args.file, args.out, args.size, args.cifar_stem, args.channels
    )
    say(
        f"{path}: {args.model} from {args.file}; {len(report['loaded'])} tensors loaded, not matched: "
        f"{report['missing'] + report['shape_mismatch'] or 'none'}"
    )


def _add_experiments(commands: argparse._SubParsersAction) -> None:
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
    p.add_argument("--model", required=True, help="resnet18, resnet34, resnet50, ... or small_cnn")
    p.add_argument("--file", required=True, help="local .safetensors or .pth state dict")
    p.add_argument("--size", type=int, required=True, help="image side the evaluations feed it")
    p.add_argument("--cifar-stem", action="store_true", help="3x3 stride-1 first conv, no max-pool")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--out", required=True, help="folder for encoder.safetensors and encoder.json")
    p.set_defaults(run=_import_weights)


def _add_pretrain(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "pretrain",
        help="SimCLR pretraining of an encoder on shards (resumes a run_dir)",
        description="SimCLR pretraining. Several GPUs: accelerate launch -m launch pretrain ...",
    )
    p.add_argument("--config", help="YAML file (launch/configs/...); keys left out keep their defaults")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.lr=0.5 data.train=DIR")
    p.set_defaults(run=_pretrain)


def _demo(args: argparse.Namespace) -> None:
    from launch._demo import format_table, run_demo

    result = run_demo(Path(args.run_dir), epochs=args.epochs, supervised_epochs=args.supervised_epochs)
    print(format_table(result))


def _add_demo(commands: argparse._SubParsersAction) -> None:
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


def say(text: str) -> None:
    """Print once under torchrun / accelerate launch: from the process of rank 0 only."""
    if os.environ.get("RANK", "0") == "0":
        print(text)


def _device(cpu: bool) -> str:
    import torch

    return "cuda" if torch.cuda.is_available() and not cpu else "cpu"


def _linear(args: argparse.Namespace) -> dict:
    train = args.train
    if args.label_fraction is not None:  # a stratified, seeded subset of the labels, kept beside the results
        train = Path(args.out) / f"train-{args.label_fraction:g}"
        shards.subset(
            args.train, train, fraction=args.label_fraction, seed=args.seed, overwrite=True, command=args.argv
        )
    if args.mode == "augmented":  # the classic protocol: a frozen encoder, a head trained on augmented views
        result = trainers.finetune(
            args.encoder,
            train,
            args.val,
            args.out,
            mode="head",
            head=args.head,
            epochs=args.epochs,
            lr_head=args.lr or 0.1,
            batch_size=args.batch_size,
            preset=args.preset,
            weight_decay=args.weight_decay,
            seed=args.seed,
            cpu=args.cpu,
            wandb=args.wandb,
            tensorboard=args.tensorboard,
        )
        say(f"{args.head} probe (augmented): top-1 {result['top1']:.2%}; {args.out}/results.json")
        return result
    result = trainers.linear_eval(
        args.encoder,
        train,
        args.val,
        args.out,
        epochs=args.epochs,
        lr=args.lr or 0.01,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        seed=args.seed,
        device=_device(args.cpu),
        wandb=args.wandb,
        tensorboard=args.tensorboard,
        head=args.head,
    )
    print(
        f"{args.head} probe: top-1 {result['top1']:.2%}, top-5 {result['top5']:.2%} on "
        f"{result['val_samples']} images; {args.out}/results.json, confusion.png"
    )
    return result


def _knn(args: argparse.Namespace) -> dict:
    result = trainers.knn_eval(
        args.encoder,
        args.train,
        args.val,
        args.out,
        k=args.k,
        temperature=args.temperature,
        batch_size=args.batch_size,
        device=_device(args.cpu),
        wandb=args.wandb,
        tensorboard=args.tensorboard,
        vote=args.vote,
    )
    print(
        f"{args.vote} kNN (k {args.k}): top-1 {result['top1']:.2%} on {result['val_samples']} images; "
        f"{args.out}/results.json"
    )
    return result


def _cluster(args: argparse.Namespace) -> dict:
    result = trainers.cluster_eval(
        args.data,
        args.out,
        method=args.method,
        encoder_path=args.encoder,
        batch_size=args.batch_size,
        seed=args.seed,
        device=_device(args.cpu),
        wandb=args.wandb,
        tensorboard=args.tensorboard,
    )
    print(
        f"{args.method} on {result['on']}: accuracy {result['top1']:.2%} (Hungarian-matched) on "
        f"{result['samples']} images; {args.out}/results.json"
    )
    return result


def _add_cluster(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "cluster",
        help="k-means / GMM accuracy on raw pixels or encoder features",
        description="Cluster labelled shards into one cluster per class (k-means or a "
        "diagonal Gaussian mixture) on L2-normalised raw pixels or encoder features; "
        "accuracy after Hungarian matching of clusters to classes.",
    )
    p.add_argument("--data", required=True, help="labelled shards")
    p.add_argument("--out", required=True, help="folder for results.json")
    p.add_argument("--method", default="kmeans", choices=trainers.METHODS)
    p.add_argument("--encoder", help="pretrain run directory or encoder.safetensors (default: raw pixels)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", action="store_true", help="stay on the CPU even with a GPU")
    _tracking_arguments(p)
    p.set_defaults(run=_cluster)


def _finetune(args: argparse.Namespace) -> dict:
    result = trainers.finetune(
        args.encoder,
        args.train,
        args.val,
        args.out,
        mode=args.mode,
        head=args.head,
        epochs=args.epochs,
        lr_head=args.lr_head,
        lr_backbone=args.lr_backbone,
        batch_size=args.batch_size,
        preset=args.preset,
        weight_decay=args.weight_decay,
        decay_epochs=args.decay_epochs,
        seed=args.seed,
        cpu=args.cpu,
        wandb=args.wandb,
        tensorboard=args.tensorboard,
    )
    say(f"fine-tune ({args.mode}): top-1 {result['top1']:.2%}; {args.out}/results.json, metrics.jsonl")
    return result


def _supervised(args: argparse.Namespace) -> dict:
    result = trainers.supervised(
        args.model,
        args.train,
        args.val,
        args.out,
        size=args.size,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        cifar_stem=args.cifar_stem,
        pretrained_file=args.pretrained_file,
        mixup=args.mixup,
        cutmix=args.cutmix,
        label_smoothing=args.label_smoothing,
        preset=args.preset,
        weight_decay=args.weight_decay,
        decay_epochs=args.decay_epochs,
        seed=args.seed,
        cpu=args.cpu,
        wandb=args.wandb,
        tensorboard=args.tensorboard,
    )
    say(
        f"supervised {args.model} ({result['parameters']:,} parameters): top-1 {result['top1']:.2%}; "
        f"{args.out}/results.json, metrics.jsonl"
    )
    return result


def _add_training(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "finetune",
        help="fine-tune a pretrained encoder with a new head (head-only or full)",
        description="Fine-tune the encoder of a pretrain run with a new head.",
    )
    p.add_argument("--encoder", required=True, help="pretrain run directory or its encoder.safetensors")
    p.add_argument("--mode", default="full", choices=["head", "full"], help="head: encoder frozen")
    p.add_argument("--head", default="linear", choices=["linear", "mlp2"])
    p.add_argument("--lr-head", type=float, default=0.1)
    p.add_argument("--lr-backbone", type=float, default=0.01)
    _training_arguments(p)
    p.set_defaults(run=_finetune)
    p = commands.add_parser(
        "supervised",
        help="supervised baseline: any timm model, Mixup/CutMix, label smoothing",
        description="Train a classifier on labels only (from scratch or a local weights file).",
    )
    p.add_argument(
        "--model", required=True, help="small_cnn, resnet18/34/50, vgg11, vit_small_patch16_224, ..."
    )
    p.add_argument("--size", type=int, required=True, help="image side fed to the model")
    p.add_argument("--cifar-stem", action="store_true", help="ResNets: 3x3 stride-1 first conv, no max-pool")
    p.add_argument("--pretrained-file", help="local weights to start from (nothing is downloaded)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--mixup", type=float, default=0.0, help="Mixup alpha (timm), 0 = off")
    p.add_argument("--cutmix", type=float, default=0.0, help="CutMix alpha (timm), 0 = off")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    _training_arguments(p)
    p.set_defaults(run=_supervised)


def _training_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", required=True, help="labelled shards to train on")
    p.add_argument("--val", required=True, help="labelled shards to measure on (every epoch)")
    p.add_argument("--out", required=True, help="folder for results.json and metrics.jsonl")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--preset", default="basic", help="train augmentations (pipelines.PRESETS)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument(
        "--decay-epochs", type=int, nargs="+", help="step decay x0.1 at these epochs (default: cosine)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", action="store_true", help="stay on the CPU even with a GPU")
    _tracking_arguments(p)


def _evaluate(args: argparse.Namespace) -> dict:
    result = trainers.evaluate(args.model, args.val, args.out, batch_size=args.batch_size, cpu=args.cpu)
    say(f"top-1 {result['top1']:.2%} on {args.val}; {args.out}/results.json")
    return result


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "evaluate",
        help="top-1 of a saved finetune/supervised classifier on labelled shards",
        description="Rebuild the classifier a finetune or supervised run saved and measure it.",
    )
    p.add_argument(
        "--model", required=True, help="the --out folder of `fastclr finetune` or `fastclr supervised`"
    )
    p.add_argument("--val", required=True, help="labelled shards of the classes it was trained on")
    p.add_argument("--out", required=True, help="folder for results.json")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--cpu", action="store_true", help="stay on the CPU even with a GPU")
    p.set_defaults(run=_evaluate)


def _tracking_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wandb", action="store_true", help="log to Weights & Biases (offline without a login)")
    p.add_argument("--tensorboard", action="store_true", help="log to TensorBoard in the output folder")


def _report(args: argparse.Namespace) -> None:
    from launch._report import report

    if (args.tsne_encoder is None) != (args.tsne_data is None):
        raise ConfigError("--tsne-encoder and --tsne-data go together")
    try:
        path = report([Path(d) for d in args.dirs], Path(args.out), args.tsne_encoder, args.tsne_data)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    print(f"wrote {path}")


def _add_report(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "report",
        help="markdown table over runs and evals, curves and a t-SNE map",
        description="Collect results.json and metrics.jsonl under the given directories.",
    )
    p.add_argument("dirs", nargs="+", help="run and evaluation directories (searched recursively)")
    p.add_argument("--out", required=True, help="folder for results.md and the PNGs")
    p.add_argument("--tsne-encoder", type=Path, help="encoder (run dir or file) for a t-SNE map of features")
    p.add_argument("--tsne-data", type=Path, help="labelled shards to embed")
    p.set_defaults(run=_report)


def _add_eval(commands: argparse._SubParsersAction) -> None:
    for name, run, help_text in [
        (
            "linear",
            _linear,
            "linear probe of a frozen encoder on cached features (top-1/5, confusion matrix)",
        ),
        ("knn", _knn, "kNN accuracy (weighted or majority vote) of an encoder on a train/val shard pair"),
    ]:
        p = commands.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--encoder", required=True, help="pretrain run directory or its encoder.safetensors")
        p.add_argument(
            "--train",
            required=True,
            help="labelled shards the probe learns from (kNN: the bank); "
            "for a label fraction, make them with `fastclr shards subset`",
        )
        p.add_argument("--val", required=True, help="labelled shards to measure on")
        p.add_argument("--out", required=True, help="folder for results.json")
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--cpu", action="store_true", help="stay on the CPU even with a GPU")
        _tracking_arguments(p)
        if name == "linear":
            p.add_argument(
                "--mode",
                default="cached",
                choices=["cached", "augmented"],
                help="cached: features extracted once (seconds); augmented: the classic protocol, "
                "a head trained on augmented views of the frozen encoder",
            )
            p.add_argument("--head", default="linear", choices=["linear", "mlp2"])
            p.add_argument("--preset", default="basic", help="augmented mode: train augmentations")
            p.add_argument(
                "--label-fraction", type=float, help="train on this stratified fraction of the labels"
            )
            p.add_argument(
                "--epochs", type=int, default=300, help="cached: full-batch steps; augmented: epochs"
            )
            p.add_argument("--lr", type=float, help="default: 0.01 (cached, Adam), 0.1 (augmented, SGD)")
            p.add_argument("--weight-decay", type=float, default=1e-4)
            p.add_argument("--seed", type=int, default=0)
        else:
            p.add_argument("--k", type=int, default=200)
            p.add_argument("--temperature", type=float, default=0.1, help="weighted vote: exp(similarity/T)")
            p.add_argument(
                "--vote",
                default="weighted",
                choices=trainers.KNN_VOTES,
                help="weighted (ours: k 200, T 0.1) or majority (simclr-cifar10.py: --k 10 --vote majority)",
            )
        p.set_defaults(run=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastclr", description="SimCLR pretraining with a GPU-fed input pipeline."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_shards(commands)
    _add_pretrain(commands)
    _add_experiments(commands)
    _add_eval(commands)
    _add_cluster(commands)
    _add_training(commands)
    _add_evaluate(commands)
    _add_report(commands)
    _add_demo(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = ["fastclr", *(sys.argv[1:] if argv is None else argv)]  # recorded in manifests
    try:
        args.run(args)
    except ERRORS as err:
        print(f"fastclr: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fastclr: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    return 0
