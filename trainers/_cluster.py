"""Clustering accuracy: k-means or a Gaussian mixture, matched to labels (launch/configs/a3_*).

Clusters are matched one-to-one to classes with the Hungarian algorithm on
their confusion matrix, so accuracy is the best any labelling of the clusters
could reach.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from fastclr.config import check_settings
from fastclr.pipelines import create_loader, open_shards
from fastclr.trainers._encoder_file import load_encoder
from fastclr.trainers._errors import EvalError
from fastclr.trainers._eval_config import CLUSTER_METHODS as METHODS
from fastclr.trainers._eval_config import ClusterConfig
from fastclr.trainers._eval_io import check_classes, check_inputs, device_for, tracker, write_results
from fastclr.trainers._knn import extract_features
from fastclr.trainers._lock import writes_out


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


@writes_out("cluster")
def cluster(cfg: ClusterConfig) -> dict:
    """Cluster the shards in `data` on raw pixels (no encoder) or on an encoder's features."""
    check_settings(cfg)
    started = time.time()
    check_classes(check_inputs(cfg.encoder, None, cfg.data)["val"], cfg.data)
    data = open_shards(cfg.data)  # checked once, read by the loader below
    manifest = data.manifest
    if cfg.encoder is not None:
        encoder, info = load_encoder(cfg.encoder, cfg.trust_unhashed)
        size, channels = info["image_size"], info["in_chans"]
    else:  # raw pixels: the identity "encoder" on native-size images
        encoder, info = torch.nn.Flatten(), {"sha256": None}
        size, channels = min(manifest["image"]["min_size"]), None
    device = device_for(cfg.cpu)
    loader = create_loader(
        "val", data, batch_size=cfg.batch_size, size=size, device=device, channels=channels
    )
    features, labels = extract_features(encoder.to(device), loader, desc=f"features of {cfg.data}")
    accuracy = cluster_accuracy(
        features.cpu().numpy(), labels.cpu().numpy(), manifest["num_classes"], cfg.method, cfg.seed
    )
    return write_results(
        Path(cfg.out),
        {
            "protocol": f"cluster ({cfg.method})",
            "top1": accuracy,
            "on": "encoder features" if cfg.encoder else "pixels",
            "encoder": str(cfg.encoder) if cfg.encoder else None,
            "encoder_sha256": info["sha256"],
            "data": str(cfg.data),
            "samples": len(labels),
            "seed": cfg.seed,
            "seconds": time.time() - started,
        },
        tracker(cfg.out, cfg.wandb, cfg.tensorboard),
    )
