"""The online linear probe (trainers/_probe.py) and the two kNN votes (trainers/_knn.py)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import torchrun
from dist_probe import batches
from safetensors.torch import load_file
from test_pretrain import config, data, losses  # noqa: F401 (data is the shards fixture)

from fastclr import shards
from fastclr.encoders import build_encoder
from fastclr.trainers import knn_predict, pretrain
from fastclr.trainers._probe import OnlineProbe


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def online(run_dir) -> list[tuple[int, str, float]]:
    return [(r["step"], k, v) for r in records(run_dir) for k, v in r.items() if "online" in k]


def test_the_probe_never_changes_the_encoder(data, tmp_path):  # noqa: F811
    """Same seed, probe on and off: the same losses and bit-equal encoder weights."""
    on = pretrain(config(data, tmp_path / "on", epochs=1, online_probe=True))
    off = pretrain(config(data, tmp_path / "off", epochs=1, online_probe=False))
    assert on["global_step"] == off["global_step"] == 6
    assert losses(tmp_path / "on") == losses(tmp_path / "off")
    weights_on = load_file(tmp_path / "on" / "encoder.safetensors")
    for key, value in load_file(tmp_path / "off" / "encoder.safetensors").items():
        assert torch.equal(value, weights_on[key]), key
    # a figure per log line, and the epoch's over all its steps in the epoch line
    *windows, (_, key, epoch_figure) = online(tmp_path / "on")
    assert [k for _, k, _ in windows] == ["online_train_top1"] * 6 and key == "epoch_online_train_top1"
    assert epoch_figure == pytest.approx(sum(v for *_, v in windows) / 6)  # 6 windows of 32 views
    assert online(tmp_path / "off") == []


def test_the_probes_gradients_never_reach_the_encoder():
    torch.manual_seed(0)
    encoder = build_encoder("small_cnn", False, in_chans=3)
    images, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 4, (4,))
    features = encoder(images)  # still carries the encoder's graph
    assert features.requires_grad
    probe = OnlineProbe(encoder.num_features, 4, lr=0.1, device=torch.device("cpu"), seed=0)
    before = probe.head.weight.detach().clone()
    probe.step(features, labels)
    assert all(p.grad is None for p in encoder.parameters())
    assert not torch.equal(before, probe.head.weight) and probe.seen.item() == 8


def test_the_probe_learns_a_separable_problem_and_counts_on_the_device():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 32, generator=generator) * 3

    def batch(n):
        labels = torch.randint(0, 4, (n,), generator=generator)
        views = [centres[labels] + torch.randn(n, 32, generator=generator) for _ in range(2)]
        return torch.cat(views), labels

    probe = OnlineProbe(32, 4, lr=0.1, device=torch.device("cpu"), seed=0)
    first = [probe.step(*batch(64)) for _ in range(5)]
    assert isinstance(probe.correct, torch.Tensor) and probe.seen.item() == 5 * 128 and first
    early = probe.train_top1()
    assert probe.seen.item() == 0  # reading resets the window
    for _ in range(200):
        probe.step(*batch(64))
    late = probe.train_top1()
    val_features, val_labels = batch(512)
    assert late > max(early, 0.9) and probe.val_top1(val_features[:512], val_labels) > 0.9


def test_the_probe_resumes_exactly(data, tmp_path):  # noqa: F811
    """Stopped mid-epoch 2 and resumed: every online figure and the probe's weights as in one go."""
    knn = {"data__knn_bank": str(data / "train"), "data__knn_val": str(data / "test")}
    pretrain(config(data, tmp_path / "straight", epochs=3, **knn))
    stopped = pretrain(config(data, tmp_path / "resumed", epochs=3, max_steps=8, **knn))
    assert stopped["stopped"] == "max_steps"
    pretrain(config(data, tmp_path / "resumed", epochs=3, **knn))
    straight = online(tmp_path / "straight")
    assert [k for _, k, _ in straight].count("online_val_top1") == 3
    assert online(tmp_path / "resumed") == straight
    final = [
        sorted((tmp_path / run / "checkpoints").iterdir())[-1] / "probe.pt" for run in ("straight", "resumed")
    ]
    a, b = (torch.load(path, weights_only=True) for path in final)
    for key, value in a["head"].items():
        assert torch.equal(value, b["head"][key])
    momentum = [s["momentum_buffer"] for s in (a["optimizer"]["state"][0], b["optimizer"]["state"][0])]
    assert torch.equal(*momentum)


def test_unlabelled_shards_switch_the_probe_off_with_one_note(tmp_path, capsys):
    source = shards.open_source("synthetic", None, "unlabeled", num=48, size=16, classes=4, seed=1)
    shards.convert(source, tmp_path / "unlabeled", shard_size=48, progress=False)
    cfg = config(tmp_path, tmp_path / "run", max_steps=2)
    cfg.data.train = str(tmp_path / "unlabeled")
    pretrain(cfg)
    out = capsys.readouterr().out
    assert out.count("note: online probe off: the pretrain shards hold no labels") == 1
    assert online(tmp_path / "run") == []
    assert not any("probe.pt" == p.name for p in (tmp_path / "run").rglob("*"))


def _normalised(rng, n, d=8):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_majority_knn_matches_scikit_learns_cosine_classifier():
    """k=10 majority vote on cosine similarity: the protocol of simclr-cifar10.py."""
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    bank, queries = _normalised(rng, 300), _normalised(rng, 100)
    labels = rng.integers(0, 5, 300)
    expected = KNeighborsClassifier(n_neighbors=10, metric="cosine").fit(bank, labels).predict(queries)
    got = knn_predict(
        torch.from_numpy(bank), torch.from_numpy(labels), torch.from_numpy(queries), 5, k=10, vote="majority"
    )
    np.testing.assert_array_equal(got.numpy(), expected)


def test_weighted_knn_matches_a_numpy_reference():
    rng = np.random.default_rng(1)
    bank, queries = _normalised(rng, 300), _normalised(rng, 100)
    labels = rng.integers(0, 5, 300)
    similarity = queries @ bank.T
    nearest = np.argsort(-similarity, axis=1)[:, :20]
    votes = np.zeros((100, 5))
    for row, index in enumerate(nearest):
        np.add.at(votes[row], labels[index], np.exp(similarity[row, index] / 0.1))
    got = knn_predict(torch.from_numpy(bank), torch.from_numpy(labels), torch.from_numpy(queries), 5, k=20)
    np.testing.assert_array_equal(got.numpy(), votes.argmax(1))
    majority = knn_predict(
        torch.from_numpy(bank), torch.from_numpy(labels), torch.from_numpy(queries), 5, k=20, vote="majority"
    )
    assert not torch.equal(got, majority)  # the two votes differ on this data: each test sees its own
    with pytest.raises(ValueError, match="unknown kNN vote 'mode'"):
        knn_predict(
            torch.from_numpy(bank), torch.from_numpy(labels), torch.from_numpy(queries), 5, vote="mode"
        )


def test_the_online_figures_reach_tensorboard(data, tmp_path):  # noqa: F811
    """W&B and TensorBoard get what metrics.jsonl gets (one `_log` path); TensorBoard is readable here."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    knn = {"data__knn_bank": str(data / "train"), "data__knn_val": str(data / "test")}
    pretrain(config(data, tmp_path / "run", epochs=1, track__tensorboard=True, **knn))
    folders = {p.parent for p in (tmp_path / "run").rglob("events.out.tfevents.*")}
    tags = {tag for f in folders for tag in EventAccumulator(str(f)).Reload().Tags()["scalars"]}
    assert {"online_train_top1", "online_val_top1", "knn_accuracy", "knn_k10_majority_accuracy"} <= tags


@pytest.mark.multiproc
def test_two_processes_keep_one_probe_equal_to_a_single_process_on_the_whole_batch(tmp_path):
    """Gradients averaged over ranks: every rank's head is the head one process trains on all images."""
    done = torchrun(29547, Path(__file__).parent / "dist_probe.py", tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    probe = OnlineProbe(16, 4, lr=0.5, device=torch.device("cpu"), seed=0)
    for view1, view2, labels in batches(2, 5):
        probe.step(torch.cat([view1, view2]), labels)
    expected = probe.train_top1()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["top1"] == expected
        for key, value in probe.head.state_dict().items():
            torch.testing.assert_close(got["head"][key], value, rtol=1e-5, atol=1e-6)
