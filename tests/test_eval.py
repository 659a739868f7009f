"""Evaluation of a pretrained encoder: linear probe on cached features, kNN, and their bad inputs."""

import json
import shutil

import pytest
import torch

from fastclr import shards
from fastclr.launch.cli import main
from fastclr.trainers import (
    EvalError,
    FinetuneConfig,
    KnnConfig,
    LinearConfig,
    PretrainConfig,
    SupervisedConfig,
    cluster_accuracy,
    finetune,
    fit_linear_probe,
    knn,
    knn_predict,
    labelled_pair,
    linear,
    pretrain,
    probe_accuracy,
    supervised,
)


def pair(run, out, encoder=None, val=None):
    """The settings every evaluation of the module's run shares: encoder, train, val, out."""
    return dict(
        encoder=str(encoder or run / "run"),
        train=str(run / "train"),
        val=str(val or run / "test"),
        out=str(out),
    )


def flags(run, out, encoder: bool = True) -> list:
    """The same inputs as command-line options."""
    return [
        *(["--encoder", run / "run"] if encoder else []),
        "--train",
        run / "train",
        "--val",
        run / "test",
        "--out",
        out,
    ]


def head_only(run, out, **settings):
    return FinetuneConfig(**pair(run, out), mode="head", epochs=1, batch_size=8, cpu=True, **settings)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real (tiny) pretrain run and labelled shards to evaluate it on."""
    root = tmp_path_factory.mktemp("eval")
    for split, num, classes in [("train", 64, 4), ("test", 30, 4), ("other", 30, 3)]:
        source = shards.open_source(
            "synthetic", None, "train", num=num, size=16, classes=classes, seed=len(split)
        )
        shards.convert(source, root / split, encoding="jpeg", progress=False)
    cfg = PretrainConfig(run_dir=str(root / "run"), epochs=1, batch_size=16, precision="fp32", cpu=True)
    cfg.data.train, cfg.data.size, cfg.data.num_threads = str(root / "train"), 16, 1
    cfg.model.encoder, cfg.model.hidden_dim, cfg.model.out_dim = "small_cnn", 32, 16
    cfg.optim.name, cfg.optim.lr, cfg.track.progress, cfg.track.log_every = "adam", 1e-3, False, 1
    pretrain(cfg)
    return root


def test_the_probe_separates_separable_features():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 32, generator=generator) * 4
    labels = torch.arange(500) % 5
    features = centres[labels] + torch.randn(500, 32, generator=generator)
    probe = fit_linear_probe(features[:250], labels[:250], num_classes=5)
    assert probe_accuracy(probe, features[250:], labels[250:]) > 0.99


def test_linear_writes_results_a_confusion_matrix_and_the_probe(run, tmp_path):
    result = linear(LinearConfig(**pair(run, tmp_path / "lin"), epochs=50))
    saved = json.loads((tmp_path / "lin" / "results.json").read_text())
    assert saved == result and 0 <= result["top1"] <= result["top5"] <= 1
    assert result["val_samples"] == 30 and set(result["per_class"]) == {f"class_{c}" for c in range(4)}
    assert len(result["encoder_sha256"]) == 64
    assert (tmp_path / "lin" / "confusion.png").stat().st_size > 1000
    assert (tmp_path / "lin" / "probe.safetensors").is_file()


def test_knn_from_the_encoder_file(run, tmp_path):
    result = knn(KnnConfig(**pair(run, tmp_path / "knn", encoder=run / "run" / "encoder.safetensors"), k=5))
    assert result["protocol"] == "knn" and 0 <= result["top1"] <= 1 and result["train_samples"] == 64


def test_fastclr_knn_takes_the_anchors_majority_vote(run, tmp_path, capsys):
    encoder, train, test = run / "run", run / "train", run / "test"
    args = ["knn", "--encoder", encoder, "--train", train, "--val", test, "--k", "10", "--cpu"]
    assert main([*map(str, args), "--vote", "majority", "--out", str(tmp_path / "m")]) == 0
    assert "majority kNN (k 10): top-1" in capsys.readouterr().out
    majority = json.loads((tmp_path / "m" / "results.json").read_text())
    weighted = knn(KnnConfig(**pair(run, tmp_path / "w"), k=10))
    assert (majority["vote"], majority["temperature"], weighted["vote"]) == ("majority", None, "weighted")
    _, (bank, bank_labels), (queries, labels), _ = labelled_pair(
        encoder, train, test, 256, torch.device("cpu")
    )
    expected = knn_predict(bank, bank_labels, queries, 4, k=10, vote="majority")
    assert majority["top1"] == (expected == labels).float().mean().item()


def test_an_encoder_of_another_architecture_is_named(run, tmp_path):
    shutil.copytree(run / "run", tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints"))
    info = json.loads((tmp_path / "run" / "encoder.json").read_text())
    info["encoder"] = "resnet18"  # a description written by hand: no hashes, so it must be trusted
    del info["sha256"], info["description_sha256"]
    (tmp_path / "run" / "encoder.json").write_text(json.dumps(info))
    cfg = LinearConfig(**pair(run, tmp_path / "out", encoder=tmp_path / "run"), trust_unhashed=True)
    with pytest.raises(EvalError, match="does not fit a resnet18.*another architecture or width"):
        linear(cfg)


def test_changed_weights_and_a_missing_description_are_named(run, tmp_path):
    shutil.copytree(run / "run", tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints"))
    weights = tmp_path / "run" / "encoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    cfg = KnnConfig(**pair(run, tmp_path / "out", encoder=tmp_path / "run"))
    with pytest.raises(EvalError, match="sha256 differs"):
        knn(cfg)
    (tmp_path / "run" / "encoder.json").unlink()
    with pytest.raises(EvalError, match="encoder.json: missing"):
        knn(cfg)


def test_unlabelled_shards_cannot_be_evaluated(run, tmp_path):
    source = shards.open_source("synthetic", None, "unlabeled", num=20, size=16, classes=4)
    shards.convert(source, tmp_path / "u", progress=False)
    with pytest.raises(EvalError, match="unlabelled shards cannot be evaluated"):
        knn(KnnConfig(**pair(run, tmp_path / "out", val=tmp_path / "u")))


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_clustering_separable_blobs_is_about_perfect(method):
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(300) % 3
    features = torch.randn(3, 8, generator=generator)[labels] * 10 + torch.randn(300, 8, generator=generator)
    assert cluster_accuracy(features.numpy(), labels.numpy(), 3, method) > 0.99


def test_cluster_command_on_pixels_and_on_features(run, tmp_path, run_cli):
    code, out, err = run_cli(
        "cluster", "--data", run / "test", "--out", tmp_path / "pixels", "--method", "gmm"
    )
    assert code == 0, err
    pixels = json.loads((tmp_path / "pixels" / "results.json").read_text())
    assert pixels["on"] == "pixels" and pixels["samples"] == 30 and 0.25 <= pixels["top1"] <= 1
    code, out, err = run_cli(
        "cluster", "--data", run / "test", "--out", tmp_path / "f", "--encoder", run / "run"
    )
    assert code == 0 and "kmeans on encoder features" in out


def weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("mode", ["head", "full"])
def test_head_only_fine_tuning_keeps_the_backbone_bit_identical_and_full_changes_it(
    run, tmp_path, monkeypatch, mode
):
    import fastclr.trainers._classify as classify

    seen = {}
    real_fit = classify.fit_classifier

    def recording_fit(model, *args, **kwargs):
        seen["before"] = weights(model[0])
        history = real_fit(model, *args, **kwargs)
        seen["after"] = weights(model[0])
        return history

    monkeypatch.setattr(classify, "fit_classifier", recording_fit)
    result = finetune(
        FinetuneConfig(**pair(run, tmp_path / mode), mode=mode, epochs=2, batch_size=8, cpu=True)
    )
    assert len(result["history"]) == 2 and 0 <= result["top1"] <= 1
    changed = [k for k in seen["before"] if not torch.equal(seen["before"][k], seen["after"][k])]
    if mode == "head":
        assert changed == []  # weights and BN running statistics alike
    else:
        assert any("weight" in k for k in changed)
    assert (tmp_path / mode / "metrics.jsonl").read_text().count("val_top1") == 2
    assert (tmp_path / mode / "model.safetensors").is_file()
    assert (
        result["top1"] == pytest.approx(result["history"][-1]["val_top1"])
        and result["top5"] >= result["top1"]
    )
    assert len(result["per_class"]) == 4 and (tmp_path / mode / "confusion.png").is_file()


def test_supervised_baseline_with_cutmix_mixup_and_label_smoothing(run, tmp_path, run_cli):
    code, out, err = run_cli(
        "supervised",
        "--model",
        "resnet18",
        "--cifar-stem",
        "--size",
        16,
        *flags(run, tmp_path / "sup", encoder=False),
        "--epochs",
        1,
        "--batch-size",
        8,
        "--mixup",
        0.2,
        "--cutmix",
        1.0,
        "--label-smoothing",
        0.1,
        "--cpu",
    )
    assert code == 0, err
    result = json.loads((tmp_path / "sup" / "results.json").read_text())
    assert (
        result["model"] == "resnet18" and result["settings"]["cutmix"] == 1.0 and result["parameters"] > 1e7
    )


def test_a_vit_and_a_vgg_build_for_small_images():
    from fastclr.encoders import build_classifier

    for name in ("vit_tiny_patch16_224", "vgg11"):
        model = build_classifier(name, num_classes=7, img_size=32)
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_report_builds_its_table_and_figures_from_real_runs(run, tmp_path, run_cli):
    linear(LinearConfig(**pair(run, tmp_path / "evals" / "linear"), epochs=20))
    finetune(head_only(run, tmp_path / "evals" / "ft"))
    code, out, err = run_cli(
        "report",
        run / "run",
        tmp_path / "evals",
        "--out",
        tmp_path / "report",
        "--tsne-encoder",
        run / "run",
        "--tsne-data",
        run / "test",
    )
    assert code == 0, err
    assert f"t-SNE: features of {run / 'test'}: 100%" in err and "t-SNE: embedding 30 of 30" in out
    text = (tmp_path / "report" / "results.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 3
    assert any("pretrain (kNN monitor)" in r for r in rows) and any(
        "linear probe (cached features)" in r for r in rows
    )
    for name in ("loss", "lr", "accuracy", "tsne"):
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 1000 and f"({name}.png)" in text
    code, _, err = run_cli("report", tmp_path / "nothing-here", "--out", tmp_path / "r2")
    assert code == 1 and "no such directory" in err


def test_linear_command_label_fraction_mlp2_head_and_augmented_mode(run, tmp_path, run_cli):
    code, out, err = run_cli(
        "linear",
        *flags(run, tmp_path / "lf"),
        "--label-fraction",
        0.25,
        "--head",
        "mlp2",
        "--epochs",
        20,
    )
    assert code == 0, err
    result = json.loads((tmp_path / "lf" / "results.json").read_text())
    assert result["train_samples"] == 16 and result["settings"]["head"] == "mlp2"  # 25% of 16 per class
    assert shards.load_manifest(tmp_path / "lf" / "train-0.25")["subset"]["fraction"] == 0.25
    code, out, err = run_cli(
        "linear",
        *flags(run, tmp_path / "aug"),
        "--mode",
        "augmented",
        "--epochs",
        1,
        "--batch-size",
        8,
        "--cpu",
    )
    assert code == 0 and "linear probe (augmented)" in out, err
    assert (
        json.loads((tmp_path / "aug" / "results.json").read_text())["protocol"]
        == "finetune (head, linear head)"
    )


def test_evaluations_log_to_the_trackers(run, tmp_path, run_cli):
    code, _, err = run_cli(
        "knn",
        *flags(run, tmp_path / "knn"),
        "--k",
        5,
        "--tensorboard",
    )
    assert code == 0, err
    assert list((tmp_path / "knn").rglob("events.out.tfevents.*"))
    code, _, err = run_cli(
        "finetune",
        *flags(run, tmp_path / "ft"),
        "--epochs",
        1,
        "--batch-size",
        8,
        "--cpu",
        "--tensorboard",
    )
    assert code == 0, err
    assert list((tmp_path / "ft").rglob("events.out.tfevents.*"))


def test_a_saved_classifier_is_evaluated_and_refuses_shards_of_other_classes(run, tmp_path, run_cli):
    finetune(FinetuneConfig(**pair(run, tmp_path / "ft"), head="mlp2", epochs=1, batch_size=8, cpu=True))
    trained = json.loads((tmp_path / "ft" / "results.json").read_text())["top1"]
    code, out, err = run_cli(
        "evaluate", "--model", tmp_path / "ft", "--val", run / "test", "--out", tmp_path / "ev", "--cpu"
    )
    assert code == 0, err
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["top1"] == pytest.approx(trained)
    code, _, err = run_cli(
        "evaluate", "--model", tmp_path / "ft", "--val", run / "other", "--out", tmp_path / "x"
    )
    assert (
        code == 1
        and "its head predicts other classes than" in err
        and "4 classes in" in err
        and "3 in" in err
    )
    code, _, err = run_cli(
        "supervised",
        "--model",
        "small_cnn",
        "--size",
        16,
        *flags(run, tmp_path / "sup", encoder=False),
        "--epochs",
        1,
        "--batch-size",
        8,
        "--cpu",
    )
    assert code == 0, err
    code, _, err = run_cli(
        "evaluate", "--model", tmp_path / "sup", "--val", run / "test", "--out", tmp_path / "e2"
    )
    assert code == 0, err
    code, _, err = run_cli("evaluate", "--model", tmp_path, "--val", run / "test", "--out", tmp_path / "e3")
    assert code == 1 and "no model.json and model.safetensors" in err


def test_an_empty_val_set_is_named(run, tmp_path, run_cli):
    shutil.copytree(run / "test", tmp_path / "empty")
    manifest = json.loads((tmp_path / "empty" / "manifest.json").read_text())
    manifest["shards"], manifest["num_samples"] = [], 0
    (tmp_path / "empty" / "manifest.json").write_text(json.dumps(manifest))
    for tar in (tmp_path / "empty").glob("*.tar"):
        tar.unlink()
        tar.with_suffix(".idx").unlink()
    for command in (
        ["linear", "--encoder", run / "run", "--train", run / "train"],
        ["finetune", "--encoder", run / "run", "--train", run / "train", "--cpu"],
    ):
        code, _, err = run_cli(*command, "--val", tmp_path / "empty", "--out", tmp_path / "o")
        assert code == 1 and "empty: the manifest lists no samples" in err


@pytest.mark.multiproc
def test_features_of_uneven_shares_are_gathered_whole_on_every_rank(tmp_path):
    from pathlib import Path

    from conftest import torchrun
    from dist_gather import share

    done = torchrun(29561, Path(__file__).parent / "dist_gather.py", tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    images, labels = (torch.cat(parts) for parts in zip(share(0), share(1), strict=True))
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(got["labels"], labels) and len(labels) == 3 + 5
        torch.testing.assert_close(got["features"], torch.nn.functional.normalize(images, dim=1))


def test_a_mixup_run_is_the_same_run_again_with_its_seed(run, tmp_path):
    """timm's Mixup draws from numpy's global generator: `seed` fixes it too."""
    shards_ = dict(train=str(run / "train"), val=str(run / "test"))
    settings = dict(model="small_cnn", size=16, epochs=1, batch_size=8, mixup=0.2, cutmix=1.0, cpu=True)
    first, again = (
        supervised(SupervisedConfig(**shards_, out=str(tmp_path / name), **settings))["history"]
        for name in "ab"
    )
    assert first == again


def test_each_classifier_optimizer_is_built_by_name_and_a_typo_is_named():
    from fastclr.trainers import CLASSIFIER_OPTIMIZERS, create_classifier_optimizer

    params = [torch.nn.Parameter(torch.zeros(2))]
    for name in CLASSIFIER_OPTIMIZERS:
        optimizer = create_classifier_optimizer(name, [{"params": params, "lr": 0.5}], 1e-4)
        assert optimizer.param_groups[0]["lr"] == 0.5 and optimizer.param_groups[0]["weight_decay"] == 1e-4
    with pytest.raises(ValueError, match="unknown optimizer 'sgdd'; choose one of: sgd, adamw"):
        create_classifier_optimizer("sgdd", [{"params": params, "lr": 0.5}], 0.0)


@pytest.mark.multiproc
def test_a_two_process_finetune_saves_one_classifier_that_evaluate_measures_alike(run, tmp_path, run_cli):
    """DDP's wrapper stays out of model.safetensors; the val top-1 counts every rank's share once."""
    from conftest import torchrun

    argv = [*flags(run, tmp_path / "ft"), "--epochs", 1, "--batch-size", 8, "--cpu"]
    done = torchrun(29563, "-m", "fastclr", "finetune", *argv)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("fine-tune (full): top-1") == 1  # said once, by rank 0
    trained = json.loads((tmp_path / "ft" / "results.json").read_text())
    code, _, err = run_cli(
        "evaluate", "--model", tmp_path / "ft", "--val", run / "test", "--out", tmp_path / "ev"
    )
    assert code == 0, err
    measured = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert measured["top1"] == trained["top1"] and measured["per_class"] == trained["per_class"]
