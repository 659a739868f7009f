"""`fastclr linear | knn | cluster | finetune | supervised | evaluate | report`.

Each handler imports the trainers (torch, DALI, timm, accelerate) only when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastclr.launch._cli_common import device, say, tracking_arguments
from fastclr.launch._errors import ConfigError

CLUSTER_METHODS = ("kmeans", "gmm")  # trainers.METHODS, named here so help imports no torch
KNN_VOTES = ("weighted", "majority")  # trainers.KNN_VOTES, likewise


def _linear(args: argparse.Namespace) -> dict:
    from fastclr import shards, trainers

    trainers.check_inputs(args.out, args.encoder, args.train, args.val)  # before making a subset
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
        device=device(args.cpu),
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
    from fastclr import trainers

    result = trainers.knn_eval(
        args.encoder,
        args.train,
        args.val,
        args.out,
        k=args.k,
        temperature=args.temperature,
        batch_size=args.batch_size,
        device=device(args.cpu),
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
    from fastclr import trainers

    result = trainers.cluster_eval(
        args.data,
        args.out,
        method=args.method,
        encoder_path=args.encoder,
        batch_size=args.batch_size,
        seed=args.seed,
        device=device(args.cpu),
        wandb=args.wandb,
        tensorboard=args.tensorboard,
    )
    print(
        f"{args.method} on {result['on']}: accuracy {result['top1']:.2%} (Hungarian-matched) on "
        f"{result['samples']} images; {args.out}/results.json"
    )
    return result


def add_cluster(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "cluster",
        help="k-means / GMM accuracy on raw pixels or encoder features",
        description="Cluster labelled shards into one cluster per class (k-means or a "
        "diagonal Gaussian mixture) on L2-normalised raw pixels or encoder features; "
        "accuracy after Hungarian matching of clusters to classes.",
    )
    p.add_argument("--data", required=True, help="labelled shards")
    p.add_argument("--out", required=True, help="folder for results.json")
    p.add_argument("--method", default="kmeans", choices=CLUSTER_METHODS)
    p.add_argument("--encoder", help="pretrain run directory or encoder.safetensors (default: raw pixels)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", action="store_true", help="stay on the CPU even with a GPU")
    tracking_arguments(p)
    p.set_defaults(run=_cluster)


def _finetune(args: argparse.Namespace) -> dict:
    from fastclr import trainers

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
    from fastclr import trainers

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


def add_training(commands: argparse._SubParsersAction) -> None:
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
    tracking_arguments(p)


def _evaluate(args: argparse.Namespace) -> dict:
    from fastclr import trainers

    result = trainers.evaluate(args.model, args.val, args.out, batch_size=args.batch_size, cpu=args.cpu)
    say(f"top-1 {result['top1']:.2%} on {args.val}; {args.out}/results.json")
    return result


def add_evaluate(commands: argparse._SubParsersAction) -> None:
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


def _report(args: argparse.Namespace) -> None:
    from fastclr.launch._report import report

    if (args.tsne_encoder is None) != (args.tsne_data is None):
        raise ConfigError("--tsne-encoder and --tsne-data go together")
    try:
        path = report([Path(d) for d in args.dirs], Path(args.out), args.tsne_encoder, args.tsne_data)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    print(f"wrote {path}")


def add_report(commands: argparse._SubParsersAction) -> None:
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


def add_eval(commands: argparse._SubParsersAction) -> None:
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
        tracking_arguments(p)
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
                choices=KNN_VOTES,
                help="weighted (ours: k 200, T 0.1) or majority (simclr-cifar10.py: --k 10 --vote majority)",
            )
        p.set_defaults(run=run)
