"""Clustering accuracy (EXPERIMENTS.md A3): k-means or a Gaussian mixture, matched to labels.

Clusters are matched one-to-one to classes with the Hungarian algorithm on
their confusion matrix, so accuracy is the best any labelling of the clusters
could reach.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from fastclr.pipelines import create_loader, shard_source
from fastclr.trainers._encoder_file import load_encoder
from fastclr.trainers._errors import EvalError
from fastclr.trainers._eval import check_inputs, tracker, write_results
from fastclr.trainers._knn import extract_features

METHODS = ("kmeans", "gmm")


def cluster_accuracy(
    features: np.ndarray, labels: np.ndarray, num_classes: int, method: str = "kmeans", seed: int = 0
) -> float:
    """Accuracy of `method`'s clusters (one per class) after the best one-to-one matching to classes."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans
    from sklearn.metrics import confusion_matrix
    from sklearn.mixture import GaussianMixture

    if method == "kmeans":
        assigned = KMeans(num_classes, n_init=10, random_state=seed).fit_predict(features)
    elif method == "gmm":
        assigned = (
            GaussianMixture(num_classes, covariance_type="diag", random_state=seed)
            .fit(features)
            .predict(features)
        )
    else:
        raise EvalError(f"unknown clustering method {method!r}; choose one of: {', '.join(METHODS)}")
    matrix = confusion_matrix(labels, assigned, labels=list(range(num_classes)))
    rows, cols = linear_sum_assignment(-matrix)
    return float(matrix[rows, cols].sum() / len(labels))


def cluster_eval(
    data,
    out,
    method: str = "kmeans",
    encoder_path=None,
    batch_size: int = 256,
    seed: int = 0,
    device: str = "cpu",
    wandb: bool = False,
    tensorboard: bool = False,
) -> dict:
    """Cluster the shards in `data` on raw pixels (no encoder) or on an encoder's features."""
    started = time.time()
    if method not in METHODS:
        raise EvalError(f"unknown clustering method {method!r}; choose one of: {', '.join(METHODS)}")
    check_inputs(out, encoder_path, None, data)
    _, manifest = shard_source(data)
    if encoder_path is not None:
        encoder, info = load_encoder(encoder_path)
        size, channels = info["image_size"], info["in_chans"]
    else:  # raw pixels: the identity "encoder" on native-size images
        encoder, info = torch.nn.Flatten(), {"sha256": None}
        size, channels = min(manifest["image"]["min_size"]), None
    loader = create_loader("val", data, batch_size=batch_size, size=size, device=device, channels=channels)
    features, labels = extract_features(encoder.to(device), loader, desc=f"features of {data}")
    accuracy = cluster_accuracy(
        features.cpu().numpy(), labels.cpu().numpy(), manifest["num_classes"], method, seed
    )
    return write_results(
        Path(out),
        {
            "protocol": f"cluster ({method})",
            "top1": accuracy,
            "on": "encoder features" if encoder_path else "pixels",
            "encoder": str(encoder_path) if encoder_path else None,
            "encoder_sha256": info["sha256"],
            "data": str(data),
            "samples": len(labels),
            "seed": seed,
            "seconds": time.time() - started,
        },
        tracker(out, wandb, tensorboard),
    )
