"""kNN accuracy of an encoder: the cheap monitor of representation quality.

Cosine similarity to a labelled bank; the k nearest vote, two ways:
- `weighted`: each with weight exp(similarity / T) (Wu et al. 2018, as in solo-learn and lightly;
  our default, k=200, T=0.1);
- `majority`: one vote each, ties to the lowest class (scikit-learn's
  `KNeighborsClassifier(n_neighbors=10, metric="cosine")`, the protocol of simclr-cifar10.py).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from accelerate.utils import gather, pad_across_processes

from fastclr.progress import progress
from fastclr.trainers._eval_config import KNN_VOTES as VOTES

ANCHOR_K = 10  # simclr-cifar10.py's kNN: k=10, cosine, majority vote


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, concatenated in rank order on every rank; the counts may differ by rank
    (a val share is `floor(total * (rank + 1) / n) - floor(total * rank / n)`), so each share is
    padded to the largest for the gather and the padding dropped after it."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor  # a process group, not the launcher's variables: a lone process keeps its rows
    counts = gather(torch.tensor([tensor.shape[0]], device=tensor.device)).tolist()
    parts = gather(pad_across_processes(tensor, dim=0)).split(max(counts))
    return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@torch.no_grad()
def extract_features(
    encoder: torch.nn.Module, loader, autocast=None, desc: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised features and labels of every sample the loader yields, from all ranks.

    `desc`: show a progress bar (main process) under that name."""
    was_training = encoder.training
    encoder.eval()
    features, labels = [], []
    batches = progress(
        loader, desc, total=len(loader), unit="batch", enabled=desc is not None and is_main_process()
    )
    for images, label in batches:
        if autocast is not None:
            with autocast():
                out = encoder(images)
        else:
            out = encoder(images)
        features.append(F.normalize(out.float(), dim=1))
        labels.append(label)
    encoder.train(was_training)
    return gather_rows(torch.cat(features)), gather_rows(torch.cat(labels))


def knn_predict(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
    vote: str = "weighted",
) -> torch.Tensor:
    """Predicted class of each query (all tensors L2-normalised, on one device); `vote` in VOTES."""
    if vote not in VOTES:
        raise ValueError(f"unknown kNN vote {vote!r}; choose one of: {', '.join(VOTES)}")
    k = min(k, bank.shape[0])
    predictions = []
    for start in range(0, queries.shape[0], chunk):
        similarity = queries[start : start + chunk] @ bank.T
        top, index = similarity.topk(k, dim=1)
        votes = torch.zeros(top.shape[0], num_classes, device=bank.device)
        weights = (top / temperature).exp() if vote == "weighted" else torch.ones_like(top)
        votes.scatter_add_(1, bank_labels[index], weights)
        predictions.append(votes.argmax(1))
    return torch.cat(predictions)


def knn_accuracy(
    bank, bank_labels, queries, query_labels, num_classes, k=200, temperature=0.1, vote="weighted"
) -> float:
    predicted = knn_predict(bank, bank_labels, queries, num_classes, k, temperature, vote=vote)
    return (predicted == query_labels).float().mean().item()
