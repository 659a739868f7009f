"""The kNN monitor: how good the encoder is, every `knn_every` epochs, without a training run of its own.

Features of the labelled bank (`data.knn_bank`) and the held-out queries (`data.knn_val`) come from
the val pipeline with the encoder in eval mode; queries vote two ways (weighted, k = `knn_k`, and
the k=10 majority vote of the single-file SimCLR reference), and the online probe classifies the
same query features. The pipelines are built for the measurement and dropped after it.
"""

from __future__ import annotations

from fastclr.trainers._knn import ANCHOR_K, extract_features, knn_accuracy
from fastclr.trainers._tracking import autocast_context


def knn_monitor(run) -> dict[str, float]:
    """`knn_accuracy` (weighted), `knn_k10_majority_accuracy` and, with a probe, `online_val_top1`."""
    cfg, accelerator = run.cfg, run.accelerator
    encoder = accelerator.unwrap_model(run.model).encoder
    autocast = autocast_context(accelerator.device.type, cfg.precision)
    bank_loader = run.make_loader("val", run.knn_bank)
    bank, bank_labels = extract_features(encoder, bank_loader, autocast)
    queries, labels = extract_features(encoder, run.make_loader("val", run.knn_val), autocast)
    classes = run.knn_bank.num_classes
    record = {
        "knn_accuracy": knn_accuracy(
            bank, bank_labels, queries, labels, classes, cfg.knn_k, cfg.knn_temperature
        ),
        "knn_k10_majority_accuracy": knn_accuracy(
            bank, bank_labels, queries, labels, classes, ANCHOR_K, vote="majority"
        ),
    }
    if run.probe is not None:
        record["online_val_top1"] = run.probe.val_top1(queries, labels)
    return record
